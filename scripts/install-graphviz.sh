#!/bin/sh
# Install Graphviz (the 'dot' program) for `flowengine viz --format svg|png|html`.
# Mermaid, DOT and JSON output need nothing; this is only for rendered pictures.
set -u
if command -v dot >/dev/null 2>&1; then exit 0; fi
if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
    if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
        $SUDO apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
            graphviz fonts-dejavu-core >/dev/null && exit 0
    fi
fi
if command -v brew >/dev/null 2>&1; then brew install graphviz && exit 0; fi
echo "note: could not install Graphviz; svg/png/html diagrams need it" \
     "(apt-get install graphviz, or brew install graphviz). Everything else works." >&2
exit 0
