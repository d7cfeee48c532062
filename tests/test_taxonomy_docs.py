"""docs/taxonomy.md is generated from the tables and must be up to date."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from vprof.model import OVERHEAD_BUCKETS
from vprof.taxonomy.core import remedy
from vprof.taxonomy.docgen import counts, render
from vprof.taxonomy.lookup import entries

DOC = Path(__file__).parent.parent / "docs" / "taxonomy.md"


def test_docs_taxonomy_is_fresh() -> None:
    assert DOC.read_text() == render(), (
        "docs/taxonomy.md is stale: run `python -m vprof.taxonomy.docgen > docs/taxonomy.md`"
    )


def test_docs_list_every_entry_under_its_bucket_with_its_remedy() -> None:
    text = render()
    for item in entries():
        assert f"`{item.entry.name}`" in text
    for bucket in OVERHEAD_BUCKETS:
        assert remedy(bucket) in text
    assert sum(sum(per.values()) for per in counts().values()) == len(entries())


def test_docgen_module_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "vprof.taxonomy.docgen", "--counts"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith("| ISA |") and "| vmx |" in out and "| **all** |" in out
    bad = subprocess.run(
        [sys.executable, "-m", "vprof.taxonomy.docgen", "--bogus"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
