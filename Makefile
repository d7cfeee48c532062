# vprof: `make help` lists the targets.  Every target runs `setup` first; it
# is idempotent and takes seconds once done.
VENV   ?= .venv
PY     := $(VENV)/bin/python
VPROF  := $(VENV)/bin/vprof
PYTEST_ARGS ?=

.PHONY: help setup demo test unit lint docs bench clean test-kernels

help:  ## list the targets
	@grep -E '^[A-Za-z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup:  ## install packages, headers, mounts and the venv (idempotent)
	@bash deploy/setup.sh --venv $(VENV) --dev

demo: setup  ## run the micro-guest and watch it with vprof top
	@bash deploy/demo.sh $(VPROF)

test: setup  ## run the whole test suite (lint, types, unit, live, kvm, e2e)
	$(VENV)/bin/ruff check vprof tests bench dashboards
	$(VENV)/bin/ruff format --check vprof tests bench dashboards
	$(VENV)/bin/mypy
	$(PY) -m pytest $(PYTEST_ARGS)

# Each kernel boots under QEMU TCG with AMD SVM (tests/realhost/); packages are cached in
# VPROF_REALHOST_CACHE (default /var/cache/vprof-realhost).  KERNELS=6.1 for one.
KERNELS ?= 5.10,6.1,6.12
test-kernels: setup  ## run the realhost tests in L1s booting Debian 5.10, 6.1, 6.12 (real kvm_amd)
	$(PY) tests/realhost/realhost.py --kernels $(KERNELS) -- $(PYTEST_ARGS)

unit: setup  ## only the tests that need no root, BPF or KVM
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

lint: setup  ## ruff and mypy
	$(VENV)/bin/ruff check vprof tests bench dashboards
	$(VENV)/bin/ruff format --check vprof tests bench dashboards
	$(VENV)/bin/mypy

# Through a temporary file, so a generator that fails leaves the doc as it was.
docs: setup  ## regenerate docs/{taxonomy,metrics,advice,dashboards}.md, dashboard JSON, PrometheusRule
	$(PY) -m vprof.taxonomy.docgen > docs/taxonomy.md.tmp && mv docs/taxonomy.md.tmp docs/taxonomy.md
	$(PY) -m vprof.sinks.catalogue > docs/metrics.md.tmp && mv docs/metrics.md.tmp docs/metrics.md
	$(PY) -m vprof.advice.docgen > docs/advice.md.tmp && mv docs/advice.md.tmp docs/advice.md
	$(PY) -m dashboards.build

bench: setup  ## run the benchmarks under bench/ (not part of make test)
	$(PY) bench/overhead.py
	$(PY) bench/scrape.py
	$(PY) bench/guest_rates.py
	$(PY) bench/recording.py
	$(PY) bench/inventory_refresh.py
	$(PY) bench/perf_source.py
	$(PY) bench/map_read.py
	$(PY) bench/memory_soak.py --minutes 10

clean:  ## remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
