#!/bin/sh
# The Debian packages flowengine's make targets need, named in this one place.
#   demo: Graphviz draws the svg/png/html diagrams (Mermaid, DOT and JSON need nothing).
#   test: Chromium for the browser and Mermaid tests (Playwright and Puppeteer drive
#         /usr/bin/chromium; their own browser downloads are never used), and the one font
#         the Mermaid tests measure text with (tests/clients/mermaid_render.mjs asks for
#         "DejaVu Sans" by name, so other fonts on a machine change nothing).
# Usage: scripts/install-debian-packages.sh demo|test. Installs only what is missing, and
# says so (without failing) where there is no apt-get or no root.
set -u
case "${1:-}" in
    demo) packages="graphviz fonts-dejavu-core" ;;
    test) packages="graphviz fonts-dejavu-core chromium" ;;
    *) echo "usage: $0 demo|test" >&2; exit 2 ;;
esac
missing=""
for package in $packages; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
        || missing="$missing $package"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
if ! command -v apt-get >/dev/null 2>&1 || { [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; }; then
    echo "note: cannot install$missing here (no apt-get or no root); install them by hand" >&2
    exit 0
fi
echo "installing Debian packages:$missing"
# Other installs may hold dpkg's lock for a while; wait for it rather than fail.
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null 2>&1 || true
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends $missing >/dev/null \
    || echo "note: could not install$missing; the tests that need them fail in CI" >&2
exit 0
