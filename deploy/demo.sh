#!/usr/bin/env bash
# `make demo`: run the built-in micro-guest with a mixed workload and watch it
# with `vprof top`.
#
#   bash deploy/demo.sh [PATH-TO-VPROF]
#
# On a terminal this opens the live view, filtered to the demo guest (Esc
# clears the filter, q quits).  When stdout is not a terminal (CI, a pipe) it
# prints a few plain tables instead, then the guest's own operation counts to
# compare them with.  The guest is stopped on every exit path.
#
# Environment: VPROF_DEMO_SECONDS (guest run time, default 120 live / 8 batch),
# VPROF_DEMO_VCPUS (default 2).
set -euo pipefail

VPROF=${1:-vprof}
NAME="vprof-demo-$$"
VCPUS=${VPROF_DEMO_VCPUS:-2}
if [ -t 0 ] && [ -t 1 ]; then LIVE=1; else LIVE=0; fi
if [ "$LIVE" = 1 ]; then DEFAULT_SECONDS=120; else DEFAULT_SECONDS=8; fi
SECONDS_TO_RUN=${VPROF_DEMO_SECONDS:-$DEFAULT_SECONDS}

if ! command -v "$VPROF" >/dev/null 2>&1; then
    echo "demo: cannot run '$VPROF' (run 'make setup', or pass the path to vprof)" >&2
    exit 2
fi
if [ "$(id -u)" != 0 ]; then
    echo "demo: run as root: vprof attaches BPF programs to KVM tracepoints" >&2
    exit 1
fi

WORK=$(mktemp -d /tmp/vprof-demo.XXXXXX)
GUEST_PID=""
cleanup() {
    if [ -n "$GUEST_PID" ] && kill -0 "$GUEST_PID" 2>/dev/null; then
        kill -TERM "$GUEST_PID" 2>/dev/null || true
        wait "$GUEST_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$VPROF" guest --name "$NAME" --vcpus "$VCPUS" --workload mixed \
    --duration "$SECONDS_TO_RUN" --json >"$WORK/guest.jsonl" 2>"$WORK/guest.err" &
GUEST_PID=$!

# The guest prints its "ready" line once its vCPU threads exist.
for _ in $(seq 100); do
    grep -q '"ready"' "$WORK/guest.jsonl" 2>/dev/null && break
    if ! kill -0 "$GUEST_PID" 2>/dev/null; then
        echo "demo: the micro-guest failed to start:" >&2
        cat "$WORK/guest.err" >&2
        exit 1
    fi
    sleep 0.1
done
echo "demo: micro-guest '$NAME' running ($VCPUS vCPUs, mixed workload, ${SECONDS_TO_RUN}s)"

FILTER="^${NAME}\$"
if [ "$LIVE" = 1 ]; then
    "$VPROF" top --filter "$FILTER"
    exit 0
fi

# Batch: the probes attach when top starts, so the tables cover what the
# guest did from then on; its own count below covers its whole run.
"$VPROF" top -b -n 3 --filter "$FILTER"
wait "$GUEST_PID" || true
GUEST_PID=""
PY="$(dirname "$(command -v "$VPROF")")/python"
[ -x "$PY" ] || PY=python3
"$PY" - "$WORK/guest.jsonl" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
result = next((r for r in rows if r.get("event") == "result"), None)
if result is None:
    sys.exit("demo: the micro-guest printed no result")
kinds = {}
for vcpu in result["vcpus"]:
    for kind, n in vcpu.get("ops_by_kind", {}).items():
        kinds[kind] = kinds.get(kind, 0) + n
print(f"\nThe guest's own count: {result['total_ops']} operations in {result['seconds']:.1f} s")
print("  " + "  ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
EOF
