# The README's first two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config/butler.example.yaml

.PHONY: run test install postgres-server lint typecheck check clean

# The virtualenv, with the dependencies; rebuilt when pyproject.toml changes.
$(BIN)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet ".[test,dev]"
	touch $@

# A normal (non-editable) install of this tree: the plugin is found the way
# a production install finds it.
install: $(BIN)/.deps
	$(BIN)/pip install --quiet --no-deps --force-reinstall .

run: install
	$(BIN)/twistd -n --pidfile= butler-webhook --config $(CONFIG)

# The PostgreSQL server binaries the PostgreSQL tests start their own throwaway
# server from: a no-op when present; installs Debian's postgresql when missing
# and root; otherwise says loudly that those tests skip. Starts no service.
postgres-server:
	@bash scripts/ensure-postgres.sh

test: install postgres-server
	PYTHONPATH=$(CURDIR) $(BIN)/trial --jobs 2 tests

lint: $(BIN)/.deps
	$(BIN)/ruff check butler_tw tests twisted bench
	$(BIN)/ruff format --check butler_tw twisted tests bench

typecheck: $(BIN)/.deps
	$(BIN)/mypy butler_tw

check: lint typecheck test

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp* state
