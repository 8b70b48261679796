#!/usr/bin/env bash
# scripts/screenshot.sh PAGE.html OUT.png [WIDTHxHEIGHT]
# Renders a local HTML page (the demo's HTML report) with headless Chromium,
# the same way the report's browser test does, into a PNG. Nothing is
# fetched: the page is self-contained and the network flags keep Chromium
# from calling home.
set -euo pipefail
page=$1 out=$2 size=${3:-1200x1600}
chrome=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chrome" ]; then
  echo "chromium not found: install Debian's chromium package" >&2
  exit 1
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$chrome" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --disable-default-apps --disable-extensions --hide-scrollbars \
  --host-resolver-rules="MAP * ~NOTFOUND" --user-data-dir="$profile" --window-size="${size/x/,}" \
  --screenshot="$(realpath -m "$out")" "file://$(realpath "$page")" >/dev/null 2>&1
test -s "$out"
echo "wrote $out"
