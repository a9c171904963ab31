#!/bin/sh
# Make sure a redis-server binary is on this machine (claimcore starts its own
# private servers from it). Uses Debian's package; needs root or sudo.
set -e
if command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; then
    exit 0
fi
echo "claimcore: installing redis-server (Debian package)" >&2
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
# The package starts a system-wide server on 6379; claimcore does not use it.
$SUDO systemctl disable --now redis-server >/dev/null 2>&1 || $SUDO service redis-server stop >/dev/null 2>&1 || true
