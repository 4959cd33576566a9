#!/bin/sh
# Install Debian's headless Chromium for the browser tests of `flowengine ui`.
# Playwright drives it through executable_path; its own browser download is never used.
set -u
if [ -x /usr/bin/chromium ]; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "note: no apt-get; install Chromium at /usr/bin/chromium to run the browser tests" >&2
    exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
# Other installs may hold dpkg's lock for a while; wait for it rather than fail.
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends chromium fonts-dejavu-core >/dev/null \
    || echo "note: could not install chromium; the browser tests will be skipped" >&2
exit 0
