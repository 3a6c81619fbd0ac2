#!/usr/bin/env bash
# Screenshots of every tab of the explorer on the shipped default, for the docs: under Xvfb
# with software OpenGL, the explorer waits for its first accuracy over the whole test set, then
# shows Distributions, Quantization, Accelerator, Explore (after running its default sweep
# with accuracy) and Search (after a quick search of the first shipped space) and saves each window as DIR/<tab>.png (`QVIT_SCREENSHOTS`, app/src/tour.rs),
# then closes. Run it after a change to what a tab shows, and commit the images.
#
#   tools/explorer/screenshots.sh [DIR]     (default: docs/screenshots)
#
# Needs: Xvfb (Debian: xvfb) and a release build (`cargo build --release`).
set -euo pipefail
cd "$(dirname "$0")/../.."

source tools/explorer/lib.sh
out=$(realpath -m "${1:-docs/screenshots}")
mkdir -p "$out"
start_explorer QVIT_SCREENSHOTS="$out"
for _ in $(seq 1200); do
    kill -0 "$app" 2>/dev/null || break
    sleep 0.5
done
if kill -0 "$app" 2>/dev/null; then
    echo "the explorer did not finish its tour in 10 minutes" >&2
    exit 1
fi
for tab in distributions quantization accelerator explore search; do
    [[ -s $out/$tab.png ]] || { echo "no screenshot of $tab" >&2; exit 1; }
done
echo "top-1 $(cat "$ready")% on screen; screenshots of every tab in $out"
