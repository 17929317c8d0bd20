# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= etc/dev.gcfg

.PHONY: run test install deps lint unit clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Dependencies change rarely; the project itself is reinstalled (not
# editable) every time so tests and `make run` use exactly what `pip install .`
# gives a server.
$(VENV)/.deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet ".[test]"
	touch $@

install: $(VENV)/.deps
	$(BIN)/pip install --quiet --no-deps --force-reinstall .

run: install
	@mkdir -p var
	@echo "Package Manager on http://127.0.0.1:4242 (config $(abspath $(CONFIG)), data in $(abspath var))."
	@echo "Next, in another shell:"
	@echo "  export PACKAGEMANAGER_CONFIG=$(abspath $(CONFIG)) PATH=$(abspath $(BIN)):\$$PATH"
	@echo "  rspm create source --name=local-python-src --type=local-python"
	@echo "  rspm create repo --name=python --type=python"
	@echo "  rspm subscribe --repo=python --source=local-python-src"
	@echo "  rspm create token --description='CI' --sources=local-python-src --expires=30d --scope=sources:write"
	@echo "  rspm create source --name=local-r-src --type=local"
	@echo "  rspm create repo --name=cran --type=r"
	@echo "  rspm subscribe --repo=cran --source=local-r-src"
	@echo "  rspm add --source=local-r-src --path=/path/to/packages"
	$(BIN)/twistd --nodaemon --pidfile= packagemanager --config $(CONFIG)

deps:
	bash scripts/system-deps.sh

lint: $(VENV)/.deps
	$(BIN)/ruff check pm cli twisted tests bench
	$(BIN)/mypy

test: deps install lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
