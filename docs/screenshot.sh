#!/usr/bin/env bash
# The README's screenshot: IMAGE opened with `imgfs open` and shown in PCManFM under Xvfb, the mounted
# image in the sidebar (GIO lists it as a mount, with its Eject button).
#   docs/screenshot.sh IMAGE OUT.png        (make screenshot: the demo image into docs/screenshot.png)
# Needs Xvfb, PCManFM and scrot (make install installs them) and imgfs on PATH.
set -euo pipefail
image=$(realpath "$1")
out=$(realpath -m "$2")
work=$(mktemp -d)
pids=()
mnt=""
cleanup() {
    [ -n "$mnt" ] && imgfs close "$mnt" >/dev/null 2>&1 || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# A fresh desktop session: its own home (PCManFM's settings), its own display.
export HOME=$work/home XDG_CONFIG_HOME=$work/home/.config XDG_CACHE_HOME=$work/home/.cache
export XDG_RUNTIME_DIR=$work/run NO_AT_BRIDGE=1 GTK_THEME=Adwaita
# Without a session bus there is no GVfs: GLib's own monitor of the mount table is what lists the mounts (a
# desktop's GVfs lists the same ones). PCManFM's libfm would otherwise ask for UDisks 1, which is gone.
export GIO_USE_VOLUME_MONITOR=unix
mkdir -p "$XDG_CONFIG_HOME/pcmanfm/default" "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
cat > "$XDG_CONFIG_HOME/pcmanfm/default/pcmanfm.conf" <<'CONF'
[ui]
win_width=900
win_height=540
splitter_pos=190
side_pane_mode=places
view_mode=list
show_hidden=0
CONF
display=99
while [ -e "/tmp/.X11-unix/X$display" ]; do display=$((display + 1)); done
Xvfb ":$display" -screen 0 900x540x24 -nolisten tcp >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -e "/tmp/.X11-unix/X$display" ] && break; sleep 0.1; done
export DISPLAY=":$display"

mnt=$(imgfs open --no-browse "$image")
pcmanfm --new-win "$mnt" >/dev/null 2>&1 &
pids+=($!)
sleep 4  # the window maps, the folder is listed, the icons are drawn
scrot --overwrite "$out"
echo "$out: $image opened in PCManFM at $mnt"
