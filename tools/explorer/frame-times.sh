#!/usr/bin/env bash
# Measures the explorer's frame times while a PE slider is dragged back and forth on the shipped
# default: starts it under Xvfb (software OpenGL), waits for its first accuracy result, opens the
# Accelerator tab, drags the P_m slider with xdotool for a few seconds, and prints the median and
# worst frame: the explorer's own ui() time (state, cost model, views), eframe's CPU time per
# frame (adds tessellation and, with software OpenGL, part of the rendering), and the wall time
# between frames (bounded below by the pace of the drag events, about 40 per second).
#
#   tools/explorer/frame-times.sh
#
# Needs what screenshots.sh needs, plus xdotool.
set -euo pipefail
cd "$(dirname "$0")/../.."

source tools/explorer/lib.sh
times=$(mktemp)
DISPLAY_NUMBER=${DISPLAY_NUMBER:-:98} start_explorer QVIT_FRAME_TIMES="$times"

export DISPLAY=$display
xdotool mousemove 625 43 click 1 # the Accelerator tab
sleep 1
start=$(wc -l <"$times")
# The P_m slider's handle sits at 16 of 1..64 on the default; drag it along its track.
xdotool mousemove 413 98 mousedown 1
for _ in 1 2 3; do
    for x in $(seq 395 3 490) $(seq 490 -3 395); do
        xdotool mousemove "$x" 98
        sleep 0.02
    done
done
xdotool mouseup 1
sleep 0.5

frames=$(mktemp)
tail -n +"$((start + 2))" "$times" >"$frames"
n=$(wc -l <"$frames")
# column → "median worst" in ms
stats() { cut -d' ' -f"$1" "$frames" | sort -g | awk '{ v[NR] = $1 } END { printf "median %.2f ms, worst %.2f ms", v[int((NR + 1) / 2)], v[NR] }'; }
echo "$n frames while dragging P_m"
echo "explorer ui() per frame:           $(stats 1)"
echo "eframe CPU per frame:              $(stats 2)"
echo "wall time between frames:          $(stats 3)"
rm -f "$frames" "$times"
