#!/bin/sh
# Make sure headless Chromium and its ChromeDriver are on this machine, for the dashboard's browser
# test (tests/ops/test_dashboard.py). Uses Debian's packages (/usr/bin/chromium, /usr/bin/chromedriver);
# needs root or sudo. Does nothing when both are there already.
set -e
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
echo "claimcore: installing chromium and chromium-driver (Debian packages)" >&2
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    chromium chromium-driver >/dev/null
