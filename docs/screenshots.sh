#!/usr/bin/env bash
# Screenshots of the built site as a person sees it (headless Chromium, Debian's `chromium` package): the
# index, the API reference and a recipe, into docs/_build/screenshots/. Run `make docs` first. Not part of
# CI, which builds the site and checks its links and its API reference; this is for looking at it.
set -euo pipefail
cd "$(dirname "$0")"
html=$PWD/_build/html
out=$PWD/_build/screenshots
[ -f "$html/index.html" ] || { echo "screenshots: no built site in $html: run make docs first" >&2; exit 1; }
command -v chromium >/dev/null || { echo "screenshots: no chromium: apt-get install chromium" >&2; exit 1; }
mkdir -p "$out"
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
for page in index reference/api recipes/pitr-to-a-restore-point; do
    name=${page//\//-}
    timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$profile" --hide-scrollbars --window-size=1280,1500 \
        --screenshot="$out/$name.png" "file://$html/$page.html" 2>/dev/null
    echo "$out/$name.png"
done
