# ruff: noqa: E501  (findings and fixes are sentences: one line each reads better)
"""`vprof doctor`: can this host be profiled, how well, and how to fix what is missing.

Each check reads injectable roots (/proc, /sys, /lib/modules) and returns one
Finding with a level and, when it is not OK, the exact command that fixes
it.  Counting which tracepoints fire is the one live step; it is passed in
(vprof.bpf.tpcount.count) so fixture trees test everything else.
Exit status: 0 all OK, 1 degraded, 2 unusable.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from vprof.advice.host import read_host
from vprof.inventory.procfs import ProcFS

OK, DEGRADED, UNUSABLE = "ok", "degraded", "unusable"
EXIT = {OK: 0, DEGRADED: 1, UNUSABLE: 2}
MIN_KERNEL = (5, 8)  # BPF ring buffer (vprof's probes use it)
EXIT_TPS = ("kvm:kvm_exit", "kvm:kvm_entry")
# Tracepoints worth counting beyond the probe families': those whose silence
# tells the user something (the exit path, the halt-poll path).
EXTRA_TPS = ("kvm:kvm_exit", "kvm:kvm_entry", "kvm:kvm_halt_poll_ns", "kvm:kvm_page_fault")
CAP_BITS = {"CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}

Counter = Callable[[Sequence[str], float], Mapping[str, int | None]]


@dataclass(frozen=True)
class Check:
    name: str
    level: str
    detail: str
    fix: str = ""
    data: Mapping[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "check": self.name,
            "level": self.level,
            "detail": self.detail,
            "fix": self.fix,
            **({"data": dict(self.data)} if self.data else {}),
        }


@dataclass(frozen=True)
class Env:
    proc_root: str = "/proc"
    sys_root: str = "/sys"
    modules_root: str = "/lib/modules"
    counter: Counter | None = None  # None: do not count (no root or no bcc)
    seconds: float = 1.0
    euid: int = field(default_factory=os.geteuid)
    bcc: bool = field(default_factory=lambda: importlib.util.find_spec("bcc") is not None)

    @property
    def proc(self) -> ProcFS:
        return ProcFS(self.proc_root)

    def sys_path(self, *parts: str) -> str:
        return os.path.join(self.sys_root, *parts)


def _mounts(env: Env) -> dict[str, str]:
    """Mount point -> file-system type, from /proc/mounts."""
    out = {}
    for line in (env.proc.read_text("mounts", limit=1 << 20) or "").splitlines():
        parts = line.split()
        if len(parts) >= 3:
            out[parts[1]] = parts[2]
    return out


def _real(env: Env, path: str) -> str:
    """The host path a path under sys_root stands for (mounts name host paths)."""
    rel = os.path.relpath(path, env.sys_root)
    return "/sys/" + rel


def tracefs_dir(env: Env) -> str | None:
    for parts in (("kernel", "tracing"), ("kernel", "debug", "tracing")):
        if os.path.isdir(env.sys_path(*parts, "events")):
            return env.sys_path(*parts)
    return None


def check_kernel(env: Env) -> Check:
    release = (env.proc.read_text("sys", "kernel", "osrelease") or "").strip()
    try:
        version = tuple(int(x) for x in release.split("-")[0].split(".")[:2])
    except ValueError:
        version = ()
    btf = os.path.exists(env.sys_path("kernel", "btf", "vmlinux"))
    detail = f"Linux {release or 'unknown'}, BTF {'present' if btf else 'absent'}"
    if version and version < MIN_KERNEL:
        return Check(
            "kernel",
            UNUSABLE,
            detail + f": vprof needs Linux >= {MIN_KERNEL[0]}.{MIN_KERNEL[1]} (BPF ring buffer)",
            "upgrade the kernel",
        )
    return Check("kernel", OK, detail, data={"release": release, "btf": btf})


def check_lockdown(env: Env) -> Check:
    path = env.sys_path("kernel", "security", "lockdown")
    try:
        with open(path) as f:
            line = f.read()
    except OSError:
        return Check(
            "lockdown",
            DEGRADED,
            "lockdown mode unknown: securityfs is not mounted",
            "mount -t securityfs securityfs /sys/kernel/security",
        )
    mode = line[line.find("[") + 1 : line.find("]")] if "[" in line else line.strip()
    if mode == "none":
        return Check("lockdown", OK, "not locked down", data={"mode": mode})
    return Check(
        "lockdown",
        DEGRADED,
        f"locked down ({mode}): no kprobes, no fentry, debugfs KVM statistics refused; tracepoints, raw tracepoints and uprobes work (all vprof needs)",
        "boot with lockdown=none where the Secure Boot policy allows it; vprof needs only tracepoints",
        data={"mode": mode},
    )


def check_tracefs(env: Env) -> Check:
    found = tracefs_dir(env)
    if found is not None:
        return Check(
            "tracefs", OK, f"tracefs at {_real(env, found)}", data={"path": _real(env, found)}
        )
    supported = "tracefs" in (env.proc.read_text("filesystems") or "")
    if not supported:
        return Check(
            "tracefs",
            UNUSABLE,
            "this kernel has no tracefs (CONFIG_TRACING off): no tracepoints to attach to",
            "a kernel built with CONFIG_FTRACE / CONFIG_TRACING",
        )
    return Check(
        "tracefs",
        DEGRADED,
        "tracefs is not mounted: the probes cannot find their tracepoints",
        "mount -t tracefs nodev /sys/kernel/tracing",
    )


def check_debugfs(env: Env) -> Check:
    kvm = env.sys_path("kernel", "debug", "kvm")
    if not os.path.isdir(kvm):
        if os.path.isdir(env.sys_path("kernel", "debug")) and os.listdir(
            env.sys_path("kernel", "debug")
        ):
            return Check(
                "debugfs",
                DEGRADED,
                "debugfs has no kvm directory: KVM is not loaded",
                "modprobe kvm_intel (or kvm_amd)",
            )
        return Check(
            "debugfs",
            DEGRADED,
            "debugfs is not mounted: KVM's debugfs statistics are unavailable",
            "mount -t debugfs none /sys/kernel/debug",
        )
    try:
        with open(os.path.join(kvm, "exits")) as f:
            f.read(64)
    except PermissionError:
        return Check(
            "debugfs",
            DEGRADED,
            "debugfs is mounted but locked down: reading /sys/kernel/debug/kvm/* fails with EPERM (KVM statistics only through each VM's own stats fd)",
            "boot with lockdown=none, or rely on vprof's tracepoints (they cover the same events)",
            data={"locked": True},
        )
    except OSError as exc:
        return Check(
            "debugfs", DEGRADED, f"/sys/kernel/debug/kvm/exits unreadable: {exc.strerror}", ""
        )
    return Check("debugfs", OK, "KVM debugfs statistics readable", data={"locked": False})


def check_backend(env: Env) -> Check:
    host = read_host(env.proc_root, env.sys_root)
    backend = host.backend
    detail = {
        "vmx": "Intel VMX (kvm_intel)",
        "svm": "AMD SVM (kvm_amd)",
        "kvm_pvm": "kvm_pvm (PVM: no VMX/SVM; guest kernel code is emulated, no kvm_exit)",
        "arm64": "arm64 KVM",
    }.get(backend, "no KVM module loaded")
    if backend == "none":
        return Check(
            "backend",
            UNUSABLE,
            detail,
            "modprobe kvm_intel (or kvm_amd); check that VT-x/AMD-V is on in the firmware",
            data={"backend": backend},
        )
    level = DEGRADED if backend == "kvm_pvm" else OK
    return Check("backend", level, detail, data={"backend": backend})


def check_bcc(env: Env) -> Check:
    release = (env.proc.read_text("sys", "kernel", "osrelease") or "").strip()
    build = os.path.join(env.modules_root, release, "build")
    headers = os.path.isdir(os.path.join(build, "include")) or os.path.isdir(build)
    if not env.bcc:
        return Check(
            "bcc",
            DEGRADED,  # the perf source profiles without it (see check_source)
            "bcc (python3-bpfcc) is not importable: no probes can be compiled",
            "apt-get install python3-bpfcc (or `make setup`); the venv needs --system-site-packages",
        )
    if not headers:
        return Check(
            "bcc",
            DEGRADED,
            f"bcc is importable but {build} is missing: bcc cannot compile",
            "apt-get install linux-headers-$(uname -r) (or `bash deploy/setup.sh`, which links Debian's headers)",
        )
    return Check("bcc", OK, f"bcc importable, kernel headers at {build}")


def _caps(env: Env) -> int | None:
    for line in (env.proc.read_text("self", "status") or "").splitlines():
        if line.startswith("CapEff:"):
            try:
                return int(line.split()[1], 16)
            except (IndexError, ValueError):
                return None
    return None


def check_privileges(env: Env) -> Check:
    caps = _caps(env)
    have = sorted(n for n, bit in CAP_BITS.items() if caps is not None and caps >> bit & 1)
    paranoid = (env.proc.read_text("sys", "kernel", "perf_event_paranoid") or "").strip()
    data = {"euid": env.euid, "capabilities": have, "perf_event_paranoid": paranoid}
    if env.euid == 0 or "CAP_SYS_ADMIN" in have or {"CAP_BPF", "CAP_PERFMON"} <= set(have):
        return Check(
            "privileges",
            OK,
            f"euid {env.euid}, {', '.join(have) or 'no'} capabilities, perf_event_paranoid={paranoid}",
            data=data,
        )
    return Check(
        "privileges",
        UNUSABLE,
        f"euid {env.euid} without CAP_BPF+CAP_PERFMON (or CAP_SYS_ADMIN); perf_event_paranoid={paranoid}",
        "run as root, or: setcap cap_bpf,cap_perfmon,cap_sys_resource+ep $(readlink -f $(which python3))",
        data=data,
    )


PERF_LACKS = (
    "exit handling time, the guest/kernel split of vCPU time, per-port and per-address detail"
)


def check_source(bcc: Check, privileges: Check) -> Check:
    """Which snapshot source `--source auto` takes here, from the bcc and privilege checks
    (the rule of vprof/sources/select.py; `vprof probes --check` compiles to be sure)."""
    if privileges.level == UNUSABLE:
        return Check(
            "source", UNUSABLE, "neither source can run without these privileges", privileges.fix
        )
    if bcc.level == OK:
        return Check(
            "source",
            OK,
            "--source auto uses bpf where every family attaches (`vprof probes --check` shows each)",
            data={"source": "bpf"},
        )
    return Check(
        "source",
        DEGRADED,
        f"--source auto falls back to perf (counting-mode tracepoints, schedstat): it lacks {PERF_LACKS}",
        bcc.fix,
        data={"source": "perf"},
    )
