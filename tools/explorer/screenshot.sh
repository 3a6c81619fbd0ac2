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

source tools/explorer/lib.sh
out=${1:-docs/screenshots/explorer.png}
start_explorer
sleep 1 # one more frame, so the bar shows the final figure

DISPLAY=$display xwd -root -silent | convert xwd:- "$out"
echo "top-1 $(cat "$ready")% on screen; screenshot in $out"
