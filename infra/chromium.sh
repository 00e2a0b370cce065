#!/usr/bin/env bash
# Make sure Debian's chromium and its chromedriver are installed for the browser tests (tests/web/).
# Nothing is downloaded by the tests themselves: selenium is pointed at /usr/bin/chromedriver.
#   infra/chromium.sh
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi
echo "chromium.sh: installing Debian's chromium and chromium-driver" >&2
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
if [ -n "$sudo" ] && ! command -v sudo >/dev/null; then
  echo "chromium.sh: chromium is missing and I am not root: apt-get install chromium chromium-driver" >&2; exit 1
fi
$sudo apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium chromium-driver >/dev/null
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || { echo "chromium.sh: chromium did not install" >&2; exit 1; }
