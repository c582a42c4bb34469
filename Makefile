PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint soak devnet bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test,dev,bench]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check emrp2p tests bench
	$(VENV)/bin/ruff format --check emrp2p tests bench
	$(VENV)/bin/mypy

soak: $(STAMP)
	$(PY) -m emrp2p.sim check --nodes 4 --seeds 3000
	$(PY) -m emrp2p.sim check --nodes 5 --seeds 3000
	$(PY) -m emrp2p.sim check --nodes 7 --seeds 2000

devnet: $(STAMP)
	$(PY) -m emrp2p.cli.devnet $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
