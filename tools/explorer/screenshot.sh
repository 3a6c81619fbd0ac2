#!/usr/bin/env bash
# Starts the explorer on the shipped default under Xvfb with software OpenGL, waits for its first
# accuracy result over the whole test set, and saves a screenshot (default:
# docs/screenshots/explorer.png, the image the README shows).
#
#   tools/explorer/screenshot.sh [OUT.png]
#
# Needs: Xvfb, xwd and ImageMagick's convert (Debian: xvfb x11-apps imagemagick), and a release
# build (`cargo build --release`).
set -euo pipefail
cd "$(dirname "$0")/../.."

out=${1:-docs/screenshots/explorer.png}
display=${DISPLAY_NUMBER:-:97}
ready=$(mktemp -u)
state=$(mktemp -d)

Xvfb "$display" -screen 0 1400x900x24 >/dev/null 2>&1 &
xvfb=$!
trap 'kill $app $xvfb 2>/dev/null || true; rm -rf "$state" "$ready"' EXIT
sleep 1

# A fresh state folder, so that the picture never depends on an earlier run's tab or files.
DISPLAY=$display LIBGL_ALWAYS_SOFTWARE=1 XDG_DATA_HOME=$state QVIT_READY_FILE=$ready \
    ./target/release/qvit >/dev/null 2>&1 &
app=$!

for _ in $(seq 600); do
    [[ -s $ready ]] && break
    kill -0 $app 2>/dev/null || { echo "the explorer exited before its first result" >&2; exit 1; }
    sleep 0.5
done
[[ -s $ready ]] || { echo "no accuracy result after 5 minutes" >&2; exit 1; }
sleep 1 # one more frame, so the bar shows the final figure

DISPLAY=$display xwd -root -silent | convert xwd:- "$out"
echo "top-1 $(cat "$ready")% on screen; screenshot in $out"
