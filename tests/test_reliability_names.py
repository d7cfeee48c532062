"""Hostile VM names on every output (issue 15, item 4).

Micro-guests whose QEMU-style `-name guest=...` (what the inventory reads
from /proc/PID/cmdline) holds ANSI and OSC escapes, newlines, invalid UTF-8,
quotes and braces, HTML, 10 KB, right-to-left marks, and two names that are
equal once sanitised.  Checked in `vprof vms --json`, a live daemon's /metrics
(promtool on the real scrape), `vprof top -b` and its --json, the daemon's
log, and a `vprof record` of them read back by `vprof report` as text, JSON,
every CSV table and HTML: no escape or other control byte reaches them, the
colliding names stay two (series, rows, recorded VMs), nothing crashes.

A NUL cannot be in a name: the kernel's argv is NUL-separated, so a command
line cannot carry one (Python refuses it before exec: "embedded null byte").
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from guestproc import GuestProcess
from prometheus_client.parser import text_string_to_metric_families
from test_daemon import free_port
from test_daemon_e2e import wait_for

from vprof.guest.args import GuestArgs, runner_argv

pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.live, pytest.mark.kvm]

VPROF = Path(sys.executable).parent / "vprof"
TAG = f"hx{os.getpid()}"
NAMES = {
    "ansi": f"{TAG}-\x1b[31mred\x1b[0m\x1b]0;owned\x07\x1b[2J",
    "newline": f"{TAG}-line1\nvprof fake: error: injected\r",
    "utf8": f"{TAG}-bad" + os.fsdecode(b"\xff\xfe\xc3"),
    "quotes": TAG + '-q"\'{}\\"} x="1"',
    "long": f"{TAG}-" + "L" * 10_240,
    "rtl": f"{TAG}-\u202egnp.exe\u200f",
    "html": f'{TAG}-<script>alert(1)</script>&amp;<img src=x onerror="y">',
    "collide1": f"{TAG}-same\x1b[1m",
    "collide2": f"{TAG}-same\x1b[2m",
}
# Bytes no output may carry: C0 controls but newline and tab, DEL, C1.
CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")


def test_a_nul_cannot_be_in_a_command_line() -> None:
    with pytest.raises(ValueError, match="null"):
        subprocess.run(["true", "a\x00b"], check=False)


# The micro-guest refuses unprintable names (vprof.guest.args.check_name), as
# it should; QEMU takes any.  So the runner gets a plain name and the command
# line ends with a second `-name guest=HOSTILE`: the inventory reads the last
# -name, as QEMU does.
LAUNCH = "import sys; from vprof.guest.runner import main; sys.exit(main(sys.argv[1:-2]))"


def _hostile_guest(key: str, name: str) -> GuestProcess:
    args = GuestArgs(f"{TAG}-{key}", workload="hlt", duration=120, json=True)
    return GuestProcess(
        [sys.executable, "-c", LAUNCH, *runner_argv(args), "-name", f"guest={name}"]
    )


@pytest.fixture(scope="module")
def guests() -> Iterator[dict[str, GuestProcess]]:
    with ExitStack() as stack:
        out = {key: stack.enter_context(_hostile_guest(key, name)) for key, name in NAMES.items()}
        yield out
        for g in out.values():
            g.stop()


def get(url: str) -> tuple[int, bytes]:
    """The raw bytes of a reply: the checks are on bytes, before any decoding."""
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read()


def _clean(data: bytes, what: str) -> None:
    m = CONTROL.search(data)
    assert m is None, f"{what}: control byte {m.group()!r} at {m.start()}"


def test_vms_json(guests: dict[str, GuestProcess]) -> None:
    out = subprocess.run([str(VPROF), "vms", "--json"], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    _clean(out.stdout, "vms --json")
    vms = {v["pid"]: v for v in json.loads(out.stdout)["vms"]}
    for key, g in guests.items():
        vm = vms[g.pid]
        # The shown name: printable, bounded; the raw one: kept as data.
        assert vm["name"].startswith(TAG) and len(vm["name"]) <= 64, key
        assert not re.search(r"[\x00-\x1f\x7f\u200e\u200f\u202a-\u202e]", vm["name"]), key
    a, b = (vms[guests[k].pid] for k in ("collide1", "collide2"))
    assert a["name"] == b["name"] and a["pid"] != b["pid"]


@pytest.fixture(scope="module")
def daemon(
    guests: dict[str, GuestProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("names")
    port = free_port()
    log = tmp / "daemon.log"
    argv = [str(VPROF), "daemon", f"--listen=127.0.0.1:{port}", "--interval=1"]
    proc = subprocess.Popen(
        [*argv, "--families=io,vmm"], stdout=subprocess.DEVNULL, stderr=log.open("w")
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def named() -> bool:
            code, body = get(f"{url}/metrics")
            return code == 200 and body.count(f'vm="{TAG}-'.encode()) >= len(NAMES)

        wait_for("the daemon naming every guest", named, 120, 0.5)
        yield url, log
    finally:
        proc.terminate()
        assert proc.wait(10) == 0, log.read_text()[-2000:]
        _clean(log.read_bytes(), "daemon log")
        assert "Traceback" not in log.read_text()


def test_metrics_scrape(daemon: tuple[str, Path]) -> None:
    url, _ = daemon
    code, body = get(f"{url}/metrics")
    assert code == 200
    _clean(body, "/metrics")
    check = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
    # promtool also lints (help text, suffixes); parse errors are what count.
    assert b"error while linting" not in check.stdout + check.stderr, check.stderr
    names = set()
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            if s.name == "vprof_vm_info" and s.labels["vm"].startswith(TAG):
                names.add(s.labels["vm"])
    assert len(names) == len(NAMES), sorted(names)
    same = sorted(n for n in names if n.startswith(f"{TAG}-same"))
    assert len(same) == 2 and same[0] != same[1], same


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_top_batch(guests: dict[str, GuestProcess], fmt: str) -> None:
    argv = [str(VPROF), "top", "-b", "-n", "2", "-d", "0.5", "--families=io,vmm"]
    out = subprocess.run(
        [*argv, *(["--json"] if fmt == "json" else [])], capture_output=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    _clean(out.stdout, f"top -b {fmt}")
    _clean(out.stderr, f"top -b {fmt} stderr")
    assert out.stdout.count(TAG.encode()) >= len(NAMES)
    if fmt == "text":  # the two "same" rows told apart, as on /metrics
        assert f"{TAG}-same~".encode() in out.stdout
    else:
        rows = [json.loads(ln) for ln in out.stdout.splitlines()]
        keys = {r["key"] for row in rows for r in row.get("vms", [row]) if "-same" in r["vm"]}
        assert len(keys) == 2, keys


RECORD = [str(VPROF), "record", "--duration", "5", "-d", "1", "--families=io,vmm", "-f", TAG]


def test_record_and_report(guests: dict[str, GuestProcess], tmp_path: Path) -> None:
    """`vprof record` of the hostile VMs, then `vprof report` as text, JSON,
    every CSV table and HTML: no control byte, every VM its own row (the
    colliding pair "same" and "same~PID", as on /metrics), nothing merged."""
    rec = tmp_path / "rec"
    out = subprocess.run([*RECORD, "-o", str(rec)], capture_output=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    _clean(out.stderr, "record stderr")
    outputs = {}
    for fmt in ("text", "json", "html"):
        extra = {"text": [], "json": ["--json"], "html": ["--html", str(tmp_path / "r.html")]}
        done = subprocess.run(
            [str(VPROF), "report", str(rec), *extra[fmt]], capture_output=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
        _clean(done.stdout + done.stderr, f"report {fmt}")
        outputs[fmt] = done.stdout
    html = (tmp_path / "r.html").read_bytes()
    _clean(html, "report --html")
    assert b"<script>alert" not in html and b"<img src=x" not in html
    doc = json.loads(outputs["json"])
    for table in doc["tables"]:
        csv = subprocess.run(
            [str(VPROF), "report", str(rec), "--csv", "--table", table],
            capture_output=True,
            timeout=120,
        )
        assert csv.returncode == 0, csv.stderr[-2000:]
        _clean(csv.stdout, f"report --csv --table {table}")
    vms = [row["vm"] for row in doc["tables"]["vms"] if row["vm"].startswith(TAG)]
    assert len(vms) == len(set(vms)) == len(NAMES), sorted(vms)
    assert not [v for v in vms if re.search(r"[\u200e\u200f\u202a-\u202e]", v)], vms
    pids = {guests[k].pid for k in ("collide1", "collide2")}
    same = sorted(v for v in vms if v.startswith(f"{TAG}-same"))
    assert same[0] == f"{TAG}-same" and int(same[1].rpartition("~")[2]) in pids, same
    text = outputs["text"].decode()
    assert all(v in text for v in vms if len(v) < 40), "a VM missing from the text report"
