"""VM inventory: which VM, and which vCPU, every thread on a KVM host is.

    inv = Inventory()            # or Inventory("/host/proc") in a container
    view = inv.refresh()         # once per interval
    view.thread(tid)             # -> ThreadInfo(vm_key, role, vcpu_index) or None
    view.vm_of_pid(pid)          # -> VmInfo or None

See naming.py for the order in which names are looked for.
"""

from __future__ import annotations

from vprof.inventory.inventory import Inventory
from vprof.inventory.naming import NAME_SOURCES
from vprof.inventory.types import ROLES, InventoryView, ThreadInfo, VmInfo

__all__ = ["NAME_SOURCES", "ROLES", "Inventory", "InventoryView", "ThreadInfo", "VmInfo"]
