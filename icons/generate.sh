#!/usr/bin/env bash
# Renders every icon from hyperos.svg: the app icon set (PNG sizes, .icns,
# .ico, through `tauri icon`) and one tray icon per VM state. The outputs
# are committed; run this after changing the SVG (needs rsvg-convert from
# librsvg2-bin, and `npm ci` in ../ui).
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The app icon: no status dot.
sed -e 's/STATUS_COLOR/none/' -e 's/STATUS_OPACITY/0/' hyperos.svg >"$tmp/app.svg"
rsvg-convert -w 1024 -h 1024 "$tmp/app.svg" -o "$tmp/app.png"
(cd ../ui && npx --no-install tauri icon "$tmp/app.png" -o ../icons >/dev/null 2>&1)
# Only the desktop sizes are kept.
rm -rf android ios Square*.png StoreLogo.png 64x64.png

# Tray icons: state → colour of the dot.
for pair in stopped:#8a8f98 booting:#f5a623 running:#3ccf4e error:#ff4d4f; do
  state=${pair%%:*} color=${pair#*:}
  sed -e "s/STATUS_COLOR/$color/" -e 's/STATUS_OPACITY/1/' hyperos.svg >"$tmp/$state.svg"
  rsvg-convert -w 64 -h 64 "$tmp/$state.svg" -o "tray-$state.png"
done
echo "Icons written to $(pwd)."
