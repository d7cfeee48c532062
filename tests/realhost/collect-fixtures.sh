#!/bin/bash
# collect-fixtures.sh OUT [--formats-only] - in L1 (or on the host, formats only): copy the tracefs format files of the events vprof reads and
# a perf script dump of the micro-guest under perf record -e 'kvm:*' into OUT (the read-write
# share): OUT/tracefs/<release>/<system>/<event>/format and OUT/perf-script/<release>.txt.
# Run from the host: tests/realhost/realhost.py --cmd 'bash tests/realhost/collect-fixtures.sh
# "$RH_RUN/out"' --out tests/fixtures
set -eu
out=$1 rel=$(uname -r) T=/sys/kernel/tracing/events
formats_only=${2:-}
for sys in kvm kvmmmu sched; do
  for ev in "$T/$sys"/*/; do
    ev=${ev%/}
    [ -f "$ev/format" ] || continue
    mkdir -p "$out/tracefs/$rel/$sys/${ev##*/}"
    cp "$ev/format" "$out/tracefs/$rel/$sys/${ev##*/}/format"
  done
done
for ev in sys_enter_ioctl sys_exit_ioctl; do
  mkdir -p "$out/tracefs/$rel/syscalls/$ev"
  cp "$T/syscalls/$ev/format" "$out/tracefs/$rel/syscalls/$ev/format"
done
[ "$formats_only" = --formats-only ] && exit 0
mkdir -p "$out/perf-script"
cd /tmp
perf record -q -e 'kvm:*' -e sched:sched_switch -o /tmp/perf.data -- \
  "$OLDPWD/.venv/bin/vprof" guest --name fixture --workload mixed --count 20 >/dev/null
perf script -i /tmp/perf.data -F comm,tid,cpu,time,event,trace > /tmp/perf.txt
echo "perf script: $(wc -l < /tmp/perf.txt) lines"
cut -d: -f3 /tmp/perf.txt | awk '{print $1}' | sort | uniq -c | sort -rn | head -30
# The vCPU threads' lines only (the VMM's setup is not what a decoder meets), a few hundred.
grep -E '^ *CPU [0-9]+/KVM ' /tmp/perf.txt | head -n 400 > "$out/perf-script/$rel.txt"
