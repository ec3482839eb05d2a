#!/usr/bin/env bash
# Installs the built .deb with apt (which must pull its declared runtime
# dependencies), checks what it put on the system, and starts the installed
# app under Xvfb: it must come up with its window and stay up. Then removes
# the package. Needs root (CI runs as root).
set -euo pipefail
cd "$(dirname "$0")/../.."
deb=$(ls target/release/bundle/deb/*.deb | head -1)
[ -f "$deb" ] || { echo "no .deb in target/release/bundle/deb: run ./x app --no-launch" >&2; exit 1; }
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  dpkg -r hyper-os >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "deb test: $*" >&2; exit 1; }

echo "installing $deb"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "./$deb" >/dev/null
depends=$(dpkg-query -W -f='${Depends}' hyper-os)
for dep in qemu-system-x86 erofs-utils libwebkit2gtk-4.1-0 libayatana-appindicator3-1; do
  grep -q "$dep" <<<"$depends" || fail "the package does not depend on $dep: $depends"
done
[ -x /usr/bin/hyperos-desktop ] || fail "/usr/bin/hyperos-desktop is missing"
for f in kernel initrd.gz; do
  [ -s "/usr/lib/HyperOS/$f" ] || fail "the bundled $f is missing from /usr/lib/HyperOS"
done
desktop=/usr/share/applications/HyperOS.desktop
[ -f "$desktop" ] || fail "$desktop is missing"
grep -q "x-scheme-handler/dat" "$desktop" && grep -q "^Exec=hyperos-desktop %u" "$desktop" || fail "$desktop does not open dat:// links with the app: $(cat "$desktop")"

# Start the installed app, as a user would, on a private display.
Xvfb :77 -screen 0 1280x900x24 -nolisten tcp >/dev/null 2>&1 &
pids+=($!)
sleep 1
mkdir -p "$tmp/home"
HOME=$tmp/home HYPEROS_STATE_DIR=$tmp/state XDG_CONFIG_HOME=$tmp/config DISPLAY=:77 \
  WEBKIT_DISABLE_DMABUF_RENDERER=1 NO_AT_BRIDGE=1 /usr/bin/hyperos-desktop >"$tmp/app.log" 2>&1 &
app=$!
pids+=($app)
for _ in $(seq 1 60); do
  DISPLAY=:77 xdotool search --name '^HyperOS$' >/dev/null 2>&1 && break
  kill -0 "$app" 2>/dev/null || fail "the installed app exited: $(cat "$tmp/app.log")"
  sleep 0.5
done
DISPLAY=:77 xdotool search --name '^HyperOS$' >/dev/null || fail "no HyperOS window appeared: $(cat "$tmp/app.log")"
[ -s "$tmp/state/keys/id_ed25519.pub" ] || fail "the installed app created no SSH key"
sleep 2
kill -0 "$app" 2>/dev/null || fail "the installed app died: $(cat "$tmp/app.log")"
echo "the installed app runs (pid $app) with its window; package removed on exit"
