"""Boot Debian kernels under QEMU TCG with AMD SVM and run a command (pytest) inside.

    python tests/realhost/realhost.py [--kernels 5.10,6.1,6.12] [--cmd CMD | -- PYTEST ARGS]

Each kernel's packages are resolved with apt at run time (the archive moves), fetched with
`apt-get download` and unpacked with `dpkg -x` into a cache outside the checkout
(VPROF_REALHOST_CACHE, default /var/cache/vprof-realhost). apt runs with a private
configuration and state under that cache, so the host's apt setup is never touched and
nothing is installed on the host. The checkout is visible in L1 through the host's / (9p,
read-only, under a tmpfs overlay); results come back through a read-write share: the
command's exit status, its output (on stdout here) and pytest's JUnit XML.

A kernel that does not boot, or a kvm_amd that does not load, is a failure (exit status
non-zero), never a skip.
"""

from __future__ import annotations

import argparse
import lzma
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent.parent
CACHE = Path(os.environ.get("VPROF_REALHOST_CACHE", "/var/cache/vprof-realhost"))
MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
DISTS = {
    "bookworm": ["bookworm", "bookworm-updates"],
    "bullseye": ["bullseye"],
}
# series -> (distribution, meta package whose dependency names the kernel image)
KERNELS = {
    "5.10": ("bullseye", "linux-image-amd64"),
    "6.1": ("bookworm", "linux-image-amd64"),
    "6.12": ("bookworm", "linux-image-6.12-amd64"),
}
# What the initramfs needs to mount 9p and the overlay (their dependencies are added).
INITRAMFS_MODULES = ["virtio_pci", "9pnet_virtio", "9p", "overlay"]
RC_NO_KVM = 253
RC_NO_MODULES = 254
RC_INITRAMFS = 255


def log(msg: str) -> None:
    print(f"realhost: {msg}", file=sys.stderr, flush=True)


class Apt:
    """apt-get/apt-cache with a private sources list and state for one distribution."""

    def __init__(self, dist: str) -> None:
        self.dir = CACHE / "apt" / dist
        self.debs = CACHE / "debs"
        for d in ("lists/partial", "archives/partial", "etc"):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
        self.debs.mkdir(parents=True, exist_ok=True)
        lines = [f"deb {MIRROR} {s} main" for s in DISTS[dist]]
        lines.append(f"deb {SECURITY} {dist}-security main")
        (self.dir / "etc/sources.list").write_text("\n".join(lines) + "\n")
        self.opts = [
            *("-o", f"Dir::Etc::SourceList={self.dir}/etc/sources.list"),
            *("-o", "Dir::Etc::SourceParts=/nonexistent"),
            *("-o", f"Dir::State::Lists={self.dir}/lists"),
            *("-o", f"Dir::Cache={self.dir}"),
            *("-o", f"Dir::Cache::Archives={self.dir}/archives"),
            *("-o", "Dir::State::status=/dev/null"),
        ]
        self.updated = False
        self.versions: dict[str, str] = {}  # each apt-cache call rebuilds its cache: seconds

    def _run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        cmd = [tool, *self.opts, *args]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
        if p.returncode != 0:
            raise SystemExit(f"realhost: {shlex.join(cmd)} failed:\n{p.stderr.strip()}")
        return p.stdout

    def update(self) -> None:
        if not self.updated:
            self._run("apt-get", "-qq", "update")
            self.updated = True

    def depends(self, pkg: str, prefix: str) -> list[str]:
        out = self._run("apt-cache", "depends", pkg)
        return re.findall(rf"^\s*Depends: ({re.escape(prefix)}\S*)", out, re.M)

    def version(self, pkg: str) -> str:
        if pkg in self.versions:
            return self.versions[pkg]
        m = re.search(r"Candidate: (\S+)", self._run("apt-cache", "policy", pkg))
        if m is None or m.group(1) == "(none)":
            raise SystemExit(f"realhost: no candidate for {pkg}")
        self.versions[pkg] = m.group(1)
        return m.group(1)

    def fetch(self, pkg: str) -> Path:
        """The .deb of pkg's candidate version, downloaded once into the cache."""
        ver = self.version(pkg)
        name = f"{pkg}_{ver.replace(':', '%3a')}_"
        found = [p for p in self.debs.glob(f"{pkg}_*.deb") if p.name.startswith(name)]
        if not found:
            self._run("apt-get", "-qq", "download", f"{pkg}={ver}", cwd=self.debs)
            found = [p for p in self.debs.glob(f"{pkg}_*.deb") if p.name.startswith(name)]
        if not found:
            raise SystemExit(f"realhost: apt-get download {pkg}={ver} left no .deb")
        log(f"  {pkg} {ver}")
        return found[0]


def unpack(debs: list[Path], dest: Path) -> None:
    """dpkg -x every deb into dest, once (a stamp names the debs it holds)."""
    stamp = dest / ".unpacked"
    want = "\n".join(sorted(d.name for d in debs))
    if stamp.exists() and stamp.read_text() == want:
        return
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    for deb in debs:
        subprocess.run(["nice", "dpkg", "-x", str(deb), str(tmp)], check=True)
    (tmp / ".unpacked").write_text(want)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


@dataclass
class Kernel:
    series: str
    release: str
    root: Path
    initramfs: Path
    packages: list[str]


def tools() -> tuple[Path, Path]:
    """busybox-static (the initramfs) and kmod (modprobe in L1, depmod here), from bookworm."""
    apt = Apt("bookworm")
    apt.update()
    bb, km = CACHE / "tools/busybox", CACHE / "tools/kmod"
    unpack([apt.fetch("busybox-static")], bb)
    unpack([apt.fetch("kmod")], km)
    return bb / "bin/busybox", km


def prepare(series: str, busybox: Path, kmod: Path) -> Kernel:
    dist, meta = KERNELS[series]
    apt = Apt(dist)
    apt.update()
    images = [p for p in apt.depends(meta, "linux-image-") if not p.endswith("-unsigned")]
    if not images:
        raise SystemExit(f"realhost: {meta} ({dist}) names no kernel image")
    release = images[0].removeprefix("linux-image-")
    headers = f"linux-headers-{release}"
    pkgs = [images[0], headers]
    pkgs += apt.depends(headers, "linux-headers-") + apt.depends(headers, "linux-kbuild-")
    log(f"kernel {series}: {release} ({dist})")
    debs = [apt.fetch(p) for p in pkgs]
    root = CACHE / "kernels" / release
    unpack(debs, root)
    mods = root / "lib/modules" / release
    if not (mods / "modules.dep").exists():
        depmod = CACHE / "tools/depmod"
        if not depmod.exists():
            depmod.symlink_to(kmod / "bin/kmod")
        subprocess.run([str(depmod), "-b", str(root), release], check=True)
    # Links resolved inside L1, where l1-init.sh bind-mounts the headers at their own paths.
    for link, target in (("build", headers), ("source", _common(root, release))):
        (mods / link).unlink(missing_ok=True)
        (mods / link).symlink_to(f"/usr/src/{target}")
    versions = [f"{p}={apt.version(p)}" for p in pkgs]
    return Kernel(series, release, root, _initramfs(root, release, busybox), versions)


def _common(root: Path, release: str) -> str:
    commons = sorted(p.name for p in (root / "usr/src").glob("linux-headers-*-common"))
    return commons[0] if commons else f"linux-headers-{release}"


def _module_order(mods: Path) -> list[str]:
    """The initramfs modules and their dependencies, dependencies first (modules.dep)."""
    deps: dict[str, list[str]] = {}
    for line in (mods / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {re.sub(r"\.ko(\.\w+)?$", "", Path(p).name).replace("-", "_"): p for p in deps}
    builtin = (mods / "modules.builtin").read_text()
    order: list[str] = []

    def visit(path: str) -> None:
        for dep in deps[path]:
            visit(dep)
        if path not in order:
            order.append(path)

    for name in INITRAMFS_MODULES:
        if name in by_name:
            visit(by_name[name])
        elif f"/{name}.ko" not in builtin:
            raise SystemExit(f"realhost: module {name} is neither in modules.dep nor built in")
    return order


def _initramfs(root: Path, release: str, busybox: Path) -> Path:
    out = CACHE / "initramfs" / f"{release}.cpio"
    init = HERE / "initramfs-init"
    if out.exists() and out.stat().st_mtime > init.stat().st_mtime:
        return out
    mods = root / "lib/modules" / release
    ird = CACHE / "initramfs" / f"{release}.d"
    shutil.rmtree(ird, ignore_errors=True)
    for d in ("bin", "mods", "proc", "sys", "dev", "lower", "rw", "newroot"):
        (ird / d).mkdir(parents=True)
    shutil.copy(busybox, ird / "bin/busybox")
    (ird / "bin/sh").symlink_to("busybox")
    names = []
    for path in _module_order(mods):
        data = (mods / path).read_bytes()
        # busybox insmod hands the bytes to init_module as they are: decompress here.
        if path.endswith(".xz"):
            data = lzma.decompress(data)
        elif path.endswith(".zst"):
            data = subprocess.run(["zstd", "-dc"], input=data, capture_output=True).stdout
        name = re.sub(r"\.ko\.\w+$", ".ko", Path(path).name)
        (ird / "mods" / name).write_bytes(data)
        names.append(name)
    (ird / "mods/order").write_text("\n".join(names) + "\n")
    shutil.copy(init, ird / "init")
    files = sorted(str(p.relative_to(ird)) for p in ird.rglob("*"))
    with open(out.with_suffix(".tmp"), "wb") as f:
        cpio = [str(busybox), "cpio", "-o", "-H", "newc"]
        subprocess.run(cpio, input="\n".join(files).encode(), stdout=f, cwd=ird, check=True)
    out.with_suffix(".tmp").rename(out)
    shutil.rmtree(ird)
    return out


def boot(kernel: Kernel, kmod: Path, command: str, cwd: Path) -> tuple[int, Path]:
    """Run command in L1 on kernel; its status and the run directory (rc, junit, console)."""
    run = CACHE / "runs" / f"{kernel.release}.{os.getpid()}.{time.time_ns()}"
    run.mkdir(parents=True)
    (run / "cmd").write_text(command + "\n")
    (run / "cwd").write_text(str(cwd))
    append = (
        f"rh.init={HERE / 'l1-init.sh'} rh.run={run} rh.rw={run} "
        f"rh.kroot={kernel.root} rh.kmod={kmod}"
    )
    vmlinuz = kernel.root / "boot" / f"vmlinuz-{kernel.release}"
    cmd = [str(HERE / "boot.sh"), str(vmlinuz), str(kernel.initramfs), str(run), append]
    qrc = subprocess.run(cmd).returncode
    console = (run / "console.log").read_text(errors="replace")
    m = re.findall(r"@@RHRC=(\d+)", console)
    if not m:
        tail = "\n".join(console.splitlines()[-30:])
        why = "timed out" if qrc == 124 else f"ended (qemu status {qrc}) without a status"
        log(f"{kernel.release}: L1 {why}; console tail:\n{tail}")
        return 125, run
    rc = int(m[-1])
    if rc in (RC_NO_KVM, RC_NO_MODULES, RC_INITRAMFS):
        log(f"{kernel.release}: L1 setup failed (status {rc}); console tail:")
        print("\n".join(console.splitlines()[-30:]), file=sys.stderr)
    return rc, run


def realhost_modules() -> list[str]:
    """The test modules that hold realhost tests: collecting the whole of tests/
    in L1, where every import runs under TCG, took 2-4 min of a 5 min run."""
    tests = CHECKOUT / "tests"
    found = [p for p in sorted(tests.glob("test_*.py")) if "mark.realhost" in p.read_text()]
    return [str(p.relative_to(CHECKOUT)) for p in found] or ["tests"]


def pytest_command(args: list[str]) -> str:
    py = CHECKOUT / ".venv/bin/python"
    base = [str(py), "-m", "pytest", "-p", "no:cacheprovider", "-m", "realhost"]
    # $RH_RUN (the read-write run directory) is exported by l1-init.sh.
    return f'{shlex.join(base)} --junitxml="$RH_RUN/junit.xml" {shlex.join(args)}'


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kernels", default="5.10,6.1,6.12", help="comma-separated series")
    ap.add_argument("--cmd", help="a shell command to run in L1 instead of pytest")
    ap.add_argument("--junit-dir", type=Path, help="copy each kernel's JUnit XML here")
    ap.add_argument("--out", type=Path, help="copy what the command left in $RH_RUN/out here")
    ap.add_argument("pytest_args", nargs="*", help="after --: passed to pytest in L1")
    a = ap.parse_args(argv)
    series = a.kernels.split(",")
    for s in series:
        if s not in KERNELS:
            ap.error(f"unknown kernel series {s!r}; known: {', '.join(KERNELS)}")
    t0 = time.monotonic()
    busybox, kmod = tools()
    kernels = [prepare(s, busybox, kmod) for s in series]
    log(f"prepared in {time.monotonic() - t0:.0f} s")
    command = a.cmd or pytest_command(a.pytest_args or realhost_modules())
    results = []
    for k in kernels:
        t1 = time.monotonic()
        log(f"booting {k.release}: {command}")
        rc, run = boot(k, kmod, command, CHECKOUT)
        if a.junit_dir and (run / "junit.xml").exists():
            a.junit_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(run / "junit.xml", a.junit_dir / f"junit-{k.release}.xml")
        if a.out and (run / "out").is_dir():
            shutil.copytree(run / "out", a.out, dirs_exist_ok=True)
        shutil.copy(run / "console.log", CACHE / f"last-console-{k.series}.log")
        shutil.rmtree(run, ignore_errors=True)
        results.append((k, rc, time.monotonic() - t1))
    for k, rc, secs in results:
        state = "ok" if rc == 0 else f"FAILED (status {rc})"
        log(f"{k.release:28} {state:20} {secs:6.0f} s  [{', '.join(k.packages)}]")
    log(f"matrix wall time {time.monotonic() - t0:.0f} s")
    return 0 if all(rc == 0 for _, rc, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
