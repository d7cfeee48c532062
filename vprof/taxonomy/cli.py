"""`vprof explain`: print the taxonomy entry for an exit reason or event."""

from __future__ import annotations

import json
import textwrap

import click

from vprof.sanitize import display
from vprof.taxonomy.lookup import Explained, is_unknown, lookup, suggestions


def _text(item: Explained) -> str:
    entry = item.entry
    rows = [
        ("name", entry.name),
        ("isa", entry.isa),
        ("code", item.code_text or "-"),
        ("bucket", entry.bucket.value),
        ("reason", entry.reason),
        ("remedy", item.remedy),
        ("source", item.source),
    ]
    if entry.flags:
        rows.insert(3, ("flags", " ".join(entry.flags)))
    return "\n".join(
        textwrap.fill(value, width=88, initial_indent=f"{label + ':':9}", subsequent_indent=" " * 9)
        for label, value in rows
    )


def _json(item: Explained) -> dict[str, object]:
    entry = item.entry
    return {
        "name": entry.name,
        "isa": entry.isa,
        "code": entry.code if item.code_text else None,
        "code_text": item.code_text or None,
        "flags": list(entry.flags),
        "bucket": entry.bucket.value,
        "reason": entry.reason,
        "remedy": item.remedy,
        "source": item.source,
    }


def _fail(query: str, found: list[Explained]) -> None:
    shown = display(query)
    if found:
        name = found[0].entry.name
        message = f"{shown} is not in vprof's tables; vprof counts it as {name} (unclassified)"
    else:
        close = suggestions(query)
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        message = f"unknown exit reason or event {shown!r}{hint}"
    click.echo(f"vprof explain: {message}", err=True)
    raise SystemExit(2)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("query")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as a JSON list.")
def explain(query: str, as_json: bool) -> None:
    """Explain an exit reason or KVM event: its bucket, why, and what reduces it.

    QUERY is a name (case-insensitive, with or without the kernel's macro
    prefix) or ISA:CODE with ISA one of vmx, svm, arm64, userspace (or the
    kvm_exit isa number 1 or 2) and CODE decimal or 0x-hex.  A name that
    exists on several ISAs prints every match.  Unknown input exits with
    status 2 and suggests close names.

    \b
    Examples:
      vprof explain EPT_MISCONFIG
      vprof explain svm:0x7b
      vprof explain vmx:0x80000021     # basic reason 33 with FAILED_VMENTRY
      vprof explain cpuid              # VMX CPUID and SVM cpuid
      vprof explain kvm_pio
      vprof explain KVM_EXIT_MMIO

    The full table is docs/taxonomy.md.
    """
    found = lookup(query)
    if not found or all(is_unknown(item) for item in found):
        _fail(query, found)
    if as_json:
        click.echo(json.dumps([_json(item) for item in found], indent=2))
        return
    click.echo("\n\n".join(_text(item) for item in found))
