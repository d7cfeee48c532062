"""Read the symbol tables out of a tracepoint's `print fmt`.

The kernel prints symbolic names with __print_symbolic(expr, {value, "name"},
...) and __print_flags(expr, "delim", {mask, "name"}, ...).  Those tables in
/sys/kernel/tracing/events/<system>/<event>/format are the running kernel's
own word on what each code is called, so vprof checks its tables against
them.  Pure functions over text: no tracefs access here.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

_CALL = re.compile(r"__print_(symbolic|flags)\(")
_ITEM = re.compile(r"\{\s*(?P<value>[^,{}]+?)\s*,\s*(?P<name>(?:\"(?:[^\"\\]|\\.)*\"\s*)+)\}")
_STRING = re.compile(r"\"((?:[^\"\\]|\\.)*)\"")
# kvm_exit and kvm_nested_vmexit call the field exit_reason, kvm_nested_vmexit_inject exit_code.
_EXIT_FIELD = re.compile(r"REC->exit_(?:reason|code)\b")


@dataclass(frozen=True)
class SymbolTable:
    """One __print_symbolic or __print_flags table of a print fmt."""

    kind: str  # "symbolic" or "flags"
    expr: str  # the C expression the table decodes, e.g. "REC->exit_reason & 0xffff"
    entries: tuple[tuple[int, str], ...]  # (value, name) in print order


@dataclass(frozen=True)
class KvmExitTables:
    """The three tables of kvm:kvm_exit's print fmt on x86."""

    vmx: dict[int, str]
    svm: dict[int, str]
    vmx_flags: dict[int, str]


def print_fmt(format_text: str) -> str:
    """The `print fmt:` line of a tracefs format file."""
    for line in format_text.splitlines():
        if line.startswith("print fmt:"):
            return line[len("print fmt:") :].strip()
    raise ValueError("no 'print fmt:' line in format text")


def _balanced(text: str, start: int) -> str:
    """Text from `start` up to the parenthesis closing the one before it."""
    depth, i, quoted = 1, start, False
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return text[start:i]
        i += 1
    raise ValueError("unbalanced parentheses in print fmt")


_SUFFIX = re.compile(r"\b(0x[0-9a-fA-F]+|\d+)[uUlL]+\b")
_BINOPS: dict[type[ast.operator], Callable[[int, int], int]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.LShift: operator.lshift,
    ast.BitOr: operator.or_,
}


def _int_expr(text: str) -> int:
    """Evaluate a table value: integer literals with C suffixes, + - << | and unary -.

    Kernel tables write values such as "0x040 + 13", "-1" or "(1ULL << 3)".
    """
    node = ast.parse(_SUFFIX.sub(r"\1", text.strip()), mode="eval").body
    return _eval(node)


def _eval(node: ast.expr) -> int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_eval(node.left), _eval(node.right))
    raise ValueError(f"unsupported value expression in print fmt: {ast.unparse(node)}")


def symbol_tables(fmt: str) -> list[SymbolTable]:
    """Every __print_symbolic/__print_flags table in a print fmt, in order."""
    tables = []
    for match in _CALL.finditer(fmt):
        body = _balanced(fmt, match.end())
        first_brace = body.find("{")
        head = body if first_brace < 0 else body[:first_brace]
        expr = head.split(",")[0].strip()
        entries = tuple(
            (_int_expr(item["value"]), "".join(_STRING.findall(item["name"])))
            for item in _ITEM.finditer(body)
        )
        tables.append(SymbolTable(match.group(1), expr, entries))
    return tables


def kvm_exit_tables(format_text: str) -> KvmExitTables:
    """The VMX, SVM and VMX-flag tables of an x86 kvm_exit-style format file.

    Works for kvm_exit, kvm_nested_vmexit and kvm_nested_vmexit_inject.

    The VMX table decodes `exit_reason & 0xffff`, the SVM table the whole
    `exit_reason` (values as u32, so SVM_EXIT_ERR -1 becomes 0xffffffff).
    """
    vmx: dict[int, str] = {}
    svm: dict[int, str] = {}
    flags: dict[int, str] = {}
    for table in symbol_tables(print_fmt(format_text)):
        if not _EXIT_FIELD.search(table.expr):
            continue
        target = flags if table.kind == "flags" else vmx if "0xffff" in table.expr else svm
        target.update((value & 0xFFFFFFFF, name) for value, name in table.entries)
    if not vmx or not svm:
        raise ValueError("format text has no VMX and SVM exit_reason tables")
    return KvmExitTables(vmx, svm, flags)
