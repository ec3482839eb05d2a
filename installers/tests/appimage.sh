#!/usr/bin/env bash
# Starts the built AppImage under Xvfb, as a user would, with the host's
# WebKitGTK hidden: in a private mount namespace its libraries are covered
# by an empty file and its helper directory by an empty tmpfs, so only the
# AppImage's own can load. The app must come up with its window and stay
# up, map libwebkit2gtk from the AppImage's mount, start a WebKitWebProcess
# from it, and take the kernel and initrd.gz it boots from it. Needs root
# (unshare -m; CI runs as root).
set -euo pipefail
cd "$(dirname "$0")/../.."
image=$(ls target/release/bundle/appimage/*.AppImage 2>/dev/null | head -1 || true)
[ -n "$image" ] || { echo "no AppImage in target/release/bundle/appimage: run ./x app --no-launch" >&2; exit 1; }
image=$PWD/$image
multiarch=/usr/lib/x86_64-linux-gnu
tmp=$(mktemp -d)
pids=()
cleanup() {
  # The app first: the AppImage's FUSE server unmounts and exits after it.
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "appimage test: $*" >&2; exit 1; }

echo "AppImage: $image ($(( $(stat -c %s "$image") / 1000000 )) MB)"
Xvfb :78 -screen 0 1280x900x24 -nolisten tcp >/dev/null 2>&1 &
pids+=($!)
sleep 1
mkdir -p "$tmp/home" "$tmp/state" "$tmp/config"
: >"$tmp/empty"
# RUST_LOG=info: the app logs the directory of the kernel and initrd.gz.
started=$(date +%s%N)
HOME=$tmp/home HYPEROS_STATE_DIR=$tmp/state XDG_CONFIG_HOME=$tmp/config DISPLAY=:78 \
  WEBKIT_DISABLE_DMABUF_RENDERER=1 NO_AT_BRIDGE=1 RUST_LOG=info \
  unshare -m sh -ec '
    for lib in libwebkit2gtk-4.1.so.0 libjavascriptcoregtk-4.1.so.0; do
      mount --bind "$1/empty" "$2/$lib"
    done
    mount -t tmpfs hidden "$2/webkit2gtk-4.1"
    exec "$3"' sh "$tmp" "$multiarch" "$image" >"$tmp/app.log" 2>&1 &
app=$!
pids+=($app)
for _ in $(seq 1 120); do
  DISPLAY=:78 xdotool search --name '^HyperOS$' >/dev/null 2>&1 && break
  kill -0 "$app" 2>/dev/null || fail "the AppImage exited: $(cat "$tmp/app.log")"
  sleep 0.25
done
DISPLAY=:78 xdotool search --name '^HyperOS$' >/dev/null || fail "no HyperOS window appeared: $(cat "$tmp/app.log")"
echo "window after $(( ($(date +%s%N) - started) / 1000000 )) ms"
# The child processes (the FUSE server, WebKit's helpers), for cleanup.
pids+=($(pgrep -P "$app" || true))

# The host's WebKit really was hidden from the app.
root=/proc/$app/root
[ ! -s "$root$multiarch/libwebkit2gtk-4.1.so.0" ] || fail "the host's libwebkit2gtk-4.1.so.0 was not hidden from the app"
[ -z "$(ls -A "$root$multiarch/webkit2gtk-4.1")" ] || fail "the host's webkit2gtk-4.1 directory was not hidden from the app"
# ... and the app runs the AppImage's.
webkit=$(grep -o '/[^ ]*libwebkit2gtk-4\.1\.so\.0' "/proc/$app/maps" | sort -u)
[[ "$webkit" =~ ^/tmp/\.mount_[^/]+/usr/lib/libwebkit2gtk-4\.1\.so\.0$ ]] || fail "libwebkit2gtk is not mapped from the AppImage's mount: '$webkit'"
mount=${webkit%/usr/lib/*}
webprocess=""
for _ in $(seq 1 40); do
  for child in $(pgrep -P "$app"); do
    exe=$(readlink "/proc/$child/exe" 2>/dev/null || true)
    [[ "$exe" == */WebKitWebProcess ]] && webprocess=$exe
  done
  [ -n "$webprocess" ] && break
  sleep 0.25
done
[ "$webprocess" = "$mount/usr/lib/webkit2gtk-4.1/WebKitWebProcess" ] || fail "no WebKitWebProcess from $mount/usr/lib/webkit2gtk-4.1 (found '$webprocess')"

# The kernel and initrd.gz the app boots are the AppImage's, and the ones
# built in image/out.
image_dir=$(sed -n 's/.*kernel and initrd\.gz from \([^[:space:][:cntrl:]]*\).*/\1/p' "$tmp/app.log" | head -1)
[ "$image_dir" = "$mount/usr/lib/HyperOS" ] || fail "the app boots the kernel from '$image_dir', not from $mount/usr/lib/HyperOS: $(cat "$tmp/app.log")"
for f in kernel initrd.gz; do
  cmp -s "$root$image_dir/$f" "image/out/$f" || fail "the AppImage's $f is not image/out/$f"
done

[ -s "$tmp/state/keys/id_ed25519.pub" ] || fail "the app created no SSH key"
sleep 2
kill -0 "$app" 2>/dev/null || fail "the app died: $(cat "$tmp/app.log")"
echo "the AppImage runs (pid $app) on its own WebKitGTK ($webkit, $webprocess) and boots $image_dir"
