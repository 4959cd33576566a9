# Set-up and everyday commands. Every target installs what it needs and is safe to repeat.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

# The virtual environment, re-installed only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip || true
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Graphviz draws the svg/png/html diagrams; installed from Debian's packages when possible.
setup: $(STAMP)
	@command -v dot >/dev/null || scripts/install-graphviz.sh

# The main job: validate the shipped agents and draw TravelAgent.
demo: setup
	$(BIN)/flowengine validate agents/
	$(BIN)/flowengine viz agents/travel_agent.yaml --format png -o out/travel_agent.png
	$(BIN)/flowengine viz agents/travel_agent.yaml --format mermaid -o out/travel_agent.mmd

# The whole test suite; pytest's "no tests collected" (exit 5) counts as a failure.
test: setup
	$(BIN)/python -m ruff check flowengine tests bench cli.py
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest; status=$$?; \
	  if [ $$status -eq 5 ]; then echo "no tests ran: failing" >&2; exit 1; fi; exit $$status

lint: setup
	$(BIN)/python -m ruff check flowengine tests bench cli.py
	$(BIN)/python -m mypy
	$(BIN)/python -m ruff format --check flowengine tests bench cli.py

bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
