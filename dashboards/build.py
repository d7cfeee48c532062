"""Generate the Grafana dashboards and the PrometheusRule manifest.

    python -m dashboards.build            write dashboards/*.json,
                                          deploy/alerts/prometheusrule.yaml
                                          and docs/dashboards.md
    python -m dashboards.build --check    exit 1 if any committed file is stale

Sources: the panel specs in dashboards/{fleet,host,vm}.py and the alert rules
in deploy/alerts/vprof-alerts.yml.  Every metric a query names must be in
vprof/sinks/catalogue.py; the build stops (exit 2) on one that is not.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

from dashboards import alerts, docs
from dashboards.fleet import FLEET
from dashboards.host import HOST
from dashboards.queries import catalogue_types, unknown_metrics
from dashboards.spec import DashboardSpec
from dashboards.vm import VM_DASHBOARD

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS: tuple[DashboardSpec, ...] = (FLEET, HOST, VM_DASHBOARD)


def unknown_names(specs: tuple[DashboardSpec, ...] = DASHBOARDS) -> list[str]:
    """'<dashboard> / <panel>: <name>' for every metric missing from the catalogue."""
    known = catalogue_types()
    out = []
    for spec in specs:
        for row in spec.rows:
            for panel in row.panels:
                for query in panel.queries:
                    for name in sorted(unknown_metrics(query.expr, known)):
                        out.append(f"{spec.uid} / {panel.title}: {name}")
    for rule, expr in alerts.rule_exprs(alerts.load_rules(ROOT / alerts.RULES_FILE)):
        for name in sorted(unknown_metrics(expr, known)):
            out.append(f"alert {rule}: {name}")
    return out


def outputs() -> Iterator[tuple[Path, str]]:
    """(path, text) of every generated file."""
    from dashboards.grafana import render

    for spec in DASHBOARDS:
        yield ROOT / "dashboards" / spec.filename, render(spec)
    yield ROOT / alerts.MANIFEST_FILE, alerts.render_manifest(ROOT / alerts.RULES_FILE)
    yield ROOT / docs.DOCS_FILE, docs.render(DASHBOARDS, ROOT / alerts.RULES_FILE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dashboards.build",
        description="Generate vprof's Grafana dashboards and PrometheusRule manifest.",
        epilog="Example: python -m dashboards.build --check  (in CI: fail on stale files)",
    )
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if stale")
    args = parser.parse_args(argv)
    missing = unknown_names()
    if missing:
        print("metrics not in vprof/sinks/catalogue.py: " + "; ".join(missing), file=sys.stderr)
        return 2
    stale = []
    for path, text in outputs():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(str(path.relative_to(ROOT)))
        if not args.check:
            path.write_text(text)
    if args.check and stale:
        print("stale, run `python -m dashboards.build`: " + ", ".join(stale), file=sys.stderr)
        return 1
    for name in stale:
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
