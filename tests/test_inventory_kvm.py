"""The inventory, and the pipeline's use of it, against real micro-guests.

Other tests may run guests at the same time: each test finds its own guests
by PID and by a name unique to this test run, never by counting VMs.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from types import ModuleType
from typing import Any

import pytest

from vprof.inventory import Inventory, InventoryView

pytestmark = pytest.mark.kvm

FOUND_WITHIN_S = 5.0  # generous: two cores shared with other tests' guests
# Any workload will do: the inventory looks at descriptors and thread names.
# pio keeps each vCPU busy, which is why the guests here live only seconds.
WORKLOAD = "pio"


def _guestproc() -> ModuleType:
    try:
        return importlib.import_module("guestproc")
    except ImportError:
        reason = "tests/guestproc.py (the micro-guest helper) is missing"
        if os.environ.get("VPROF_REQUIRE_LIVE") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


def _until(inv: Inventory, ok: Callable[[InventoryView], bool]) -> InventoryView:
    """Refresh until `ok(view)`: a guest's threads are named as they start."""
    deadline = time.monotonic() + FOUND_WITHIN_S
    view = inv.refresh()
    while not ok(view) and time.monotonic() < deadline:
        time.sleep(0.1)
        view = inv.refresh()
    return view


def _expected_vcpus(guest: Any) -> dict[int, int]:
    return {int(v["tid"]): int(v["index"]) for v in guest.ready["vcpus"]}


def _mapped(view: InventoryView, guest: Any) -> bool:
    vm = view.vm_of_pid(guest.pid)
    return vm is not None and dict(vm.vcpus) == _expected_vcpus(guest)


@pytest.fixture
def tag() -> Iterator[str]:
    yield f"inv{os.getpid()}x{time.monotonic_ns() % 100000}"


def test_three_guests_are_found_with_their_vcpus_and_one_leaves(tag: str) -> None:
    start_guest = _guestproc().start_guest
    specs = {f"{tag}-a": 1, f"{tag}-b": 2, f"{tag}-c": 3}
    with ExitStack() as stack:
        guests = {
            name: stack.enter_context(start_guest(name, WORKLOAD, vcpus=n, duration=60))
            for name, n in specs.items()
        }
        inv = Inventory()
        view = _until(inv, lambda v: all(_mapped(v, g) for g in guests.values()))
        for name, guest in guests.items():
            vm = view.vm_of_pid(guest.pid)
            assert vm is not None, f"{name} (pid {guest.pid}) not found"
            assert (vm.name, vm.name_raw, vm.name_source) == (name, name, "qemu -name")
            assert vm.vmm == "vprof-guest"
            assert vm.vcpu_count == specs[name] == len(vm.vcpu_ids)
            assert dict(vm.vcpus) == _expected_vcpus(guest)
            for tid, index in _expected_vcpus(guest).items():
                thread = view.thread(tid)
                assert thread is not None and thread.vm_key == vm.key
                assert (thread.role, thread.vcpu_index) == ("vcpu", index)
            assert view.thread(guest.pid) is not None
            assert view.thread(guest.pid).role == "main"
            assert [v.key for v in view.by_name(name)] == [vm.key]

        leaving = guests[f"{tag}-b"]
        leaving.stop()
        leaving.wait(15)
        view = inv.refresh()  # the next refresh: within one interval
        assert view.vm_of_pid(leaving.pid) is None
        assert view.by_name(f"{tag}-b") == []
        for tid in _expected_vcpus(leaving):
            assert view.thread(tid) is None
        for name in (f"{tag}-a", f"{tag}-c"):
            assert len(view.by_name(name)) == 1


def test_vms_command_lists_a_running_guest(tag: str) -> None:
    from click.testing import CliRunner

    from vprof.inventory.cli import vms

    with _guestproc().start_guest(f"{tag}-cli", WORKLOAD, vcpus=2, duration=60) as guest:
        _until(Inventory(), lambda v: _mapped(v, guest))
        out = CliRunner().invoke(vms, ["--json"])
        assert out.exit_code == 0, out.output
        import json

        mine = [vm for vm in json.loads(out.output)["vms"] if vm["pid"] == guest.pid]
        assert len(mine) == 1
        assert mine[0]["name"] == f"{tag}-cli" and mine[0]["vcpu_count"] == 2
        assert {(v["index"], v["tid"]) for v in mine[0]["vcpus"]} == {
            (i, t) for t, i in _expected_vcpus(guest).items()
        }


@pytest.mark.live
def test_live_pipeline_attributes_each_guests_events_to_its_name(tag: str) -> None:
    from vprof.guest.workloads import PIO_PORT
    from vprof.pipeline.profiler import Profiler, ProfilerConfig

    start_guest = _guestproc().start_guest
    names = (f"{tag}-p1", f"{tag}-p2")
    with Profiler(ProfilerConfig(families=frozenset({"io"}))) as prof, ExitStack() as stack:
        guests = {
            n: stack.enter_context(start_guest(n, "pio", vcpus=2, duration=30)) for n in names
        }
        deadline = time.monotonic() + FOUND_WITHIN_S
        while True:
            time.sleep(0.5)
            snap = prof.snapshot()
            by_pid = {vm.pid: vm for vm in snap.vms}
            if all(_pio_seen(by_pid.get(g.pid), PIO_PORT) for g in guests.values()):
                break
            assert time.monotonic() < deadline, f"no port {PIO_PORT:#x} I/O seen for {names}"
        for name, guest in guests.items():
            vm = by_pid[guest.pid]
            assert (vm.name, vm.name_source, vm.vmm) == (name, "qemu -name", "vprof-guest")
            assert vm.key == f"{guest.pid}:{vm.key.split(':')[1]}" and vm.vcpu_count == 2
            indexes = {v.tid: v.index for v in vm.vcpus if v.tid in _expected_vcpus(guest)}
            assert indexes == {t: i for t, i in _expected_vcpus(guest).items() if t in indexes}
        for guest in guests.values():
            guest.stop()


def _pio_seen(vm: Any, port: int) -> bool:
    return vm is not None and any(s.kind == "pio" and s.address == port for s in vm.io)
