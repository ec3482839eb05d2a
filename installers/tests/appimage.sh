#!/usr/bin/env bash
# Starts the built AppImage under Xvfb, as a user would, with the host's
# WebKitGTK hidden: in a private mount namespace its libraries are covered
# by an empty file and its helper directory by an empty tmpfs, so only the
# AppImage's own can load. The app must come up with its window and stay
# up, map libwebkit2gtk from the AppImage's mount, start a WebKitWebProcess
# from it, and take the kernel and initrd.gz it boots from it.
#
# Then it is started again as at login (--autostart, desktop.json's
# boot_at_login) and boots the VM: the VM's supervisor must run from a mount
# of the AppImage of its own, and keep the VM running once the app has quit
# and its mount is gone, until the VM is halted, which unmounts the
# supervisor's mount too. Needs root (unshare -m; CI runs as root).
set -euo pipefail
cd "$(dirname "$0")/../.."
image=$(ls target/release/bundle/appimage/*.AppImage 2>/dev/null | head -1 || true)
[ -n "$image" ] || { echo "no AppImage in target/release/bundle/appimage: run ./x app --no-launch" >&2; exit 1; }
image=$PWD/$image
multiarch=/usr/lib/x86_64-linux-gnu
tmp=$(mktemp -d)
pids=()
cleanup() {
  # A VM left by a failed check: its supervisor and QEMU name the state
  # directory in their arguments.
  for p in $(pgrep -f -- "$tmp/state" || true); do kill -9 "$p" 2>/dev/null || true; done
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
# launch LOG [ARG...]: starts the AppImage in a mount namespace of its own
# (pid in $app), with a process that only sleeps in that namespace (pid in
# $ns), to see its mounts through even once the app has exited.
launch() {
  local log=$1
  shift
  HOME=$tmp/home HYPEROS_STATE_DIR=$tmp/state XDG_CONFIG_HOME=$tmp/config DISPLAY=:78 \
    WEBKIT_DISABLE_DMABUF_RENDERER=1 NO_AT_BRIDGE=1 RUST_LOG=info \
    unshare -m sh -ec '
      for lib in libwebkit2gtk-4.1.so.0 libjavascriptcoregtk-4.1.so.0; do
        mount --bind "$1/empty" "$2/$lib"
      done
      mount -t tmpfs hidden "$2/webkit2gtk-4.1"
      sleep 600 </dev/null >/dev/null 2>&1 &
      echo $! >"$1/ns.pid"
      image=$3
      shift 3
      exec "$image" "$@"' sh "$tmp" "$multiarch" "$image" "$@" >"$log" 2>&1 &
  app=$!
  pids+=($app)
  for _ in $(seq 1 50); do [ -s "$tmp/ns.pid" ] && break; sleep 0.1; done
  ns=$(cat "$tmp/ns.pid")
  rm -f "$tmp/ns.pid"
  pids+=($ns)
}
# The mount points of the AppImage's FUSE mounts in the app's namespace.
mounts() { awk '$5 ~ /^\/tmp\/\.mount_/ { print $5 }' "/proc/$ns/mountinfo"; }
# The processes with a file, directory or mapping under $1, for messages.
users() {
  local p
  for p in /proc/[0-9]*; do
    { readlink "$p/cwd" "$p/exe" "$p"/fd/*; cat "$p/maps"; } 2>/dev/null | grep -qF "$1" && echo -n "${p#/proc/} "
  done
}

started=$(date +%s%N)
launch "$tmp/app.log"
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

# Quit; the app's mount goes with it.
app_mount=$mount
kill "$app"
for _ in $(seq 1 100); do kill -0 "$app" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$app" 2>/dev/null || fail "the app did not exit on SIGTERM"
for _ in $(seq 1 100); do mounts | grep -qxF "$app_mount" || break; sleep 0.1; done
! mounts | grep -qxF "$app_mount" || fail "$app_mount is still mounted after the app exited"
kill "$ns" 2>/dev/null || true

# At login: the app boots the VM with no window and no click.
echo '{"boot_at_login": true}' >"$tmp/state/desktop.json"
state=$tmp/state/instances/default/state.json
field() { sed -n "s/^  \"$1\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p" "$state" 2>/dev/null; }
started=$(date +%s%N)
launch "$tmp/autostart.log" --autostart
for _ in $(seq 1 100); do
  exe=$(readlink "/proc/$app/exe" 2>/dev/null || true)
  [[ "$exe" == /tmp/.mount_*/usr/bin/hyperos-desktop ]] && break
  sleep 0.1
done
[[ "$exe" == /tmp/.mount_*/usr/bin/hyperos-desktop ]] || fail "the app does not run from an AppImage mount ('$exe'): $(cat "$tmp/autostart.log")"
app_mount=${exe%/usr/bin/*}
for _ in $(seq 1 720); do
  [ "$(field phase)" = running ] && break
  [ "$(field phase)" != failed ] || break
  kill -0 "$app" 2>/dev/null || fail "the app exited while booting: $(cat "$tmp/autostart.log")"
  sleep 0.25
done
[ "$(field phase)" = running ] || fail "the VM is not running after $(( ($(date +%s%N) - started) / 1000000000 )) s: $(cat "$state" 2>/dev/null); $(cat "$tmp/autostart.log") $(cat "$tmp/state/instances/default/supervisor.log" 2>/dev/null)"
echo "VM running $(( ($(date +%s%N) - started) / 1000000 )) ms after the app started with --autostart"

# The supervisor runs from its own mount of the AppImage (the AppImage's
# FUSE server also has __supervise in its arguments: it is the supervisor's
# runtime, forked before it mounted).
supervisor=$(field supervisor_pid)
qemu=$(field qemu_pid)
pgrep -f -- "--state-dir $tmp/state -v __supervise" | grep -qx "$supervisor" ||
  fail "state.json's supervisor ($supervisor) is not a process with __supervise in its arguments"
supervisor_exe=$(readlink "/proc/$supervisor/exe" || true)
[[ "$supervisor_exe" == /tmp/.mount_*/usr/bin/hyperos-desktop ]] || fail "the supervisor does not run from an AppImage mount: '$supervisor_exe'"
supervisor_mount=${supervisor_exe%/usr/bin/*}
[ "$supervisor_mount" != "$app_mount" ] || fail "the supervisor runs from the app's mount ($app_mount)"
qemu_running() { [[ "$(readlink "/proc/$qemu/exe" 2>/dev/null)" == */qemu-system-* ]] && tr '\0' ' ' <"/proc/$qemu/cmdline" | grep -qF "$tmp/state/"; }
qemu_running || fail "QEMU (pid $qemu in state.json) does not run"
echo "supervisor $supervisor runs from $supervisor_mount, the app from $app_mount; QEMU $qemu runs"

# Quit the app: its mount goes, the VM stays.
kill "$app"
for _ in $(seq 1 100); do kill -0 "$app" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$app" 2>/dev/null || fail "the app did not exit on SIGTERM"
quit=$(date +%s%N)
for _ in $(seq 1 100); do mounts | grep -qxF "$app_mount" || break; sleep 0.1; done
! mounts | grep -qxF "$app_mount" || fail "the app's mount $app_mount is still there after it exited (processes with a file under it: $(users "$app_mount"); else a process still holds the runtime's keep-alive pipe)"
echo "the app's mount went $(( ($(date +%s%N) - quit) / 1000000 )) ms after the app exited"
sleep 2
kill -0 "$supervisor" 2>/dev/null || fail "the supervisor died with the app: $(cat "$tmp/state/instances/default/supervisor.log")"
mounts | grep -qxF "$supervisor_mount" || fail "the supervisor's mount $supervisor_mount went with the app"
[ "$(readlink "/proc/$supervisor/exe")" = "$supervisor_exe" ] || fail "the supervisor's executable changed"
qemu_running || fail "QEMU died with the app"
[ "$(field phase)" = running ] || fail "state.json says $(field phase), not running, after the app quit"
hyperos=$(ls -t target/release/hyperos target/debug/hyperos 2>/dev/null | head -1 || true)
if [ -n "$hyperos" ]; then
  out=$(HOME=$tmp/home timeout 60 "$hyperos" --state-dir "$tmp/state" ssh -- echo alive 2>&1) ||
    fail "$hyperos ssh -- echo alive failed after the app quit: $out"
  [ "$(printf '%s' "$out" | tail -1)" = alive ] || fail "$hyperos ssh -- echo alive said: $out"
  echo "after the app quit, $hyperos ssh reaches the VM"
else
  echo "no target/{release,debug}/hyperos (built by the core's tests): skipping the SSH check after the app quit"
fi

# Halt: the supervisor exits, and its mount goes with it.
if [ -n "$hyperos" ]; then
  HOME=$tmp/home timeout 60 "$hyperos" --state-dir "$tmp/state" halt --timeout 20 >/dev/null ||
    fail "$hyperos halt failed"
else
  kill "$supervisor"
fi
for _ in $(seq 1 300); do kill -0 "$supervisor" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$supervisor" 2>/dev/null || fail "the supervisor still runs after the VM was halted"
! qemu_running || fail "QEMU still runs after the VM was halted"
for _ in $(seq 1 100); do mounts | grep -qxF "$supervisor_mount" || break; sleep 0.1; done
! mounts | grep -qxF "$supervisor_mount" || fail "the supervisor's mount $supervisor_mount is still there after it exited"
[ -z "$(mounts)" ] || fail "AppImage mounts left: $(mounts)"
echo "the VM outlived the app; halted, its supervisor's mount is gone"
