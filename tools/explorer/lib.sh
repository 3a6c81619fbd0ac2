# Shared by the explorer scripts: start Xvfb and the explorer (software OpenGL, a fresh state
# folder so nothing from an earlier run shows), and wait for its first full accuracy result.
# Sourced; sets $display, $ready, $state, $xvfb and $app, and cleans up on exit.
#   start_explorer [VAR=value ...]   extra environment for the explorer

start_explorer() {
    display=${DISPLAY_NUMBER:-:97}
    ready=$(mktemp -u)
    state=$(mktemp -d)
    Xvfb "$display" -screen 0 1400x900x24 >/dev/null 2>&1 &
    xvfb=$!
    trap 'kill $app $xvfb 2>/dev/null || true; rm -rf "$state" "$ready"' EXIT
    sleep 1
    env DISPLAY="$display" LIBGL_ALWAYS_SOFTWARE=1 XDG_DATA_HOME="$state" \
        QVIT_READY_FILE="$ready" "$@" ./target/release/qvit >/dev/null 2>&1 &
    app=$!
    for _ in $(seq 600); do
        [[ -s $ready ]] && return 0
        kill -0 "$app" 2>/dev/null || { echo "the explorer exited before its first result" >&2; exit 1; }
        sleep 0.5
    done
    echo "no accuracy result after 5 minutes" >&2
    exit 1
}
