#!/bin/sh
# Make sure promtool is on this machine: tests/ops/test_monitoring.py checks the
# alert rules in monitoring/ with `promtool check rules` and `promtool test rules`.
# Debian's prometheus package brings it (/usr/bin/promtool); needs root or sudo.
# The package also installs a Prometheus server as a system service: it is kept
# from starting during the install, and disabled after, since claimcore does not use it.
set -e
if command -v promtool >/dev/null 2>&1 || [ -x /usr/bin/promtool ]; then
    exit 0
fi
echo "claimcore: installing promtool (Debian package prometheus)" >&2
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
# invoke-rc.d asks /usr/sbin/policy-rc.d whether a package may start its service;
# 101 means no. Put one there for the install unless the machine already has one.
POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=""
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    OWN_POLICY=1
fi
cleanup() { if [ -n "$OWN_POLICY" ]; then $SUDO rm -f "$POLICY"; fi; }
trap cleanup EXIT
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
$SUDO systemctl disable --now prometheus >/dev/null 2>&1 || $SUDO service prometheus stop >/dev/null 2>&1 || true
command -v promtool >/dev/null 2>&1 || [ -x /usr/bin/promtool ]
