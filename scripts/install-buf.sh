#!/bin/sh
# Make sure the buf CLI is in the project: tests/ops/test_proto_lint.py runs `buf lint`
# on proto/ (buf.yaml). buf comes from the npm registry (@bufbuild/buf, whose platform
# package ships the binary), pinned here, into .tools/buf (gitignored). Needs node and
# npm: Debian's nodejs and npm packages are installed if missing (root or sudo).
set -e
BUF_VERSION=1.75.0
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR="$ROOT/.tools/buf"
BUF="$DIR/node_modules/.bin/buf"
if [ -x "$BUF" ] && [ "$("$BUF" --version 2>/dev/null)" = "$BUF_VERSION" ]; then
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "claimcore: installing node and npm (Debian packages nodejs, npm)" >&2
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
echo "claimcore: installing buf $BUF_VERSION (npm package @bufbuild/buf) into .tools/buf" >&2
mkdir -p "$DIR"
npm install --silent --no-audit --no-fund --prefix "$DIR" "@bufbuild/buf@$BUF_VERSION" >/dev/null
test "$("$BUF" --version)" = "$BUF_VERSION"
