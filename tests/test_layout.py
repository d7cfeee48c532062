"""The package's shape: every import runs down the data flow, and only vprof/bpf/ imports bcc.

The stages, low to high.  A module may import its own stage or a lower one,
never a higher one, so each room can be read and tested without the rooms
above it.  Rooms named here that do not exist yet are simply absent.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "vprof"

# (stage, the modules or packages in it).  Below the loader nothing touches
# /proc, /sys or /dev/kvm, so those rooms run on recorded data alone.
STAGES: tuple[tuple[str, ...], ...] = (
    # ground
    (
        "vprof",
        "vprof.model",
        "vprof.families",
        "vprof.identity",
        "vprof.sanitize",
        "vprof.markdown",
    ),
    ("vprof.taxonomy", "vprof.records"),  # pure tables and decoders
    ("vprof.bpf",),  # the only bcc user
    ("vprof.inventory", "vprof.guest"),  # /proc, /dev/kvm
    ("vprof.pipeline",),  # the BPF source
    ("vprof.sources",),  # the snapshot-source interface and other sources
    ("vprof.sinks",),
    ("vprof.offline",),
    ("vprof.advice",),
    ("vprof.daemon",),
    ("vprof.cli", "vprof.__main__"),  # wiring
)
PURE_STAGES = 2  # stages [0, PURE_STAGES) are below the loader


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def stage_of(module: str) -> int:
    best, best_len = -1, -1
    for i, names in enumerate(STAGES):
        for n in names:
            matches = module == n or (n != "vprof" and module.startswith(n + "."))
            if matches and len(n) > best_len:
                best, best_len = i, len(n)
    if best < 0:
        raise AssertionError(f"{module} is in no stage of tests/test_layout.py: add it")
    return best


def imports(path: Path) -> Iterator[str]:
    """Every module `path` imports, at any depth (function-level imports too)."""
    return imports_in(path.read_text(), module_name(path), path.name == "__init__.py")


def imports_in(text: str, module: str, is_package: bool) -> Iterator[str]:
    tree = ast.parse(text)
    here = module.split(".")
    package = here if is_package else here[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            yield mod
            # `from vprof.records import maps` imports the module vprof.records.maps.
            for alias in node.names:
                yield f"{mod}.{alias.name}"


def vprof_edges() -> dict[str, set[str]]:
    mods = modules()
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets = set()
        for imp in imports(path):
            if imp in mods and imp != name:
                targets.add(imp)
        edges[name] = targets
    return edges


def test_every_module_is_in_a_stage() -> None:
    for name in modules():
        stage_of(name)


def test_no_import_runs_up_the_flow() -> None:
    bad = []
    for src, targets in vprof_edges().items():
        for dst in targets:
            # A package's __init__ importing its own submodules is the package itself.
            if dst.startswith(src + ".") or src.startswith(dst + "."):
                continue
            if stage_of(dst) > stage_of(src):
                bad.append(f"{src} (stage {stage_of(src)}) imports {dst} (stage {stage_of(dst)})")
    assert bad == []


def test_no_import_cycle() -> None:
    edges = vprof_edges()
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt.startswith(node + "."):  # a package and its own submodules
                continue
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert cycles == []


def test_only_the_loader_imports_bcc() -> None:
    users = [
        name
        for name, path in modules().items()
        if any(i == "bcc" or i.startswith("bcc.") for i in imports(path))
    ]
    assert users and all(u == "vprof.bpf" or u.startswith("vprof.bpf.") for u in users), users


@pytest.mark.parametrize("needle", ['"/proc', '"/sys', "/dev/kvm", "geteuid"])
def test_nothing_below_the_loader_touches_the_host(needle: str) -> None:
    found = [
        name
        for name, path in modules().items()
        if stage_of(name) < PURE_STAGES and needle in path.read_text()
    ]
    assert found == []


def test_the_checker_sees_what_it_checks() -> None:
    """The checker itself: stage order, relative and function-level imports."""
    assert stage_of("vprof.model") < stage_of("vprof.records.events") < stage_of("vprof.bpf.loader")
    assert stage_of("vprof.sinks.top.view") > stage_of("vprof.pipeline.profiler")
    text = "def f():\n    from vprof.pipeline import profiler\n    from . import maps\n"
    got = set(imports_in(text, "vprof.records.events", is_package=False))
    assert {"vprof.pipeline.profiler", "vprof.records.maps"} <= got


MAX_MODULE_LINES = 400  # the house rule: "about 400"; split before a module grows past it
MAX_FUNCTION_LINES = 50
# Over the line, on purpose.  Keep this short, and say why a split would be worse.
LONG_MODULES = {
    # The one Snapshot model and its one walker: the walker names every counter
    # of every type defined here, so a new counter is added in one file.
    # + the snapshot source's fields (source, absent, KVM stats: issue 16) and the
    # advice a VM carries (issue 14), KVM's halt histograms and their walk (issue 16).
    "vprof.model": 455,
    # A table: one entry per exported metric, with its help text; split by
    # family it would scatter what docs/metrics.md is generated from.
    "vprof.sinks.catalogue": 420,
}


def test_no_module_is_too_long() -> None:
    long = {
        name: n
        for name, path in modules().items()
        if (n := len(path.read_text().splitlines())) > LONG_MODULES.get(name, MAX_MODULE_LINES)
    }
    assert long == {}


def test_no_function_is_too_long() -> None:
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {n} lines")
    assert long == []
