"""Grafana dashboards for vprof, generated from code: `python -m dashboards.build`."""
