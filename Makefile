# The README's two commands: `make demo` (main job) and `make test`.
# Both create the virtual environment in .venv on first use and reuse it after.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo docs-figures test lint format fuzz install bench bench-gpu clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	DS_BUILD_OPS=0 $(BIN)/pip install -q -c constraints.txt -e ".[dev]"   # dev includes deepspeed: build none of its ops
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sim4seg demo --out demo-out

# Paste what the demo printed (demo-out/results.md) into README.md and docs/inference.md.
docs-figures: demo
	$(BIN)/python scripts/docs_figures.py demo-out

test: $(STAMP)
	$(BIN)/python -m pytest

# Lint (ruff), formatting (ruff format --check) and the import contracts of pyproject.toml (lint-imports).
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix src tests benchmarks scripts
	$(BIN)/ruff format src tests benchmarks scripts

# The fuzz suite (tests/fuzz) with the long hypothesis profile: thousands of examples per parser.
# `make test` runs the same properties with the bounded `ci` profile.
fuzz: $(STAMP)
	SIM4SEG_FUZZ_PROFILE=fuzz $(BIN)/python -m pytest tests/fuzz --hypothesis-show-statistics -p no:cacheprovider

# bench_gpu.py is separate: full size it needs a GPU; on the CPU it runs shrunk for minutes (bench-gpu)
bench: $(STAMP)
	for b in benchmarks/bench_*.py; do [ $$b = benchmarks/bench_gpu.py ] || $(BIN)/python $$b || exit 1; done

bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/bench_gpu.py

clean:
	rm -rf $(VENV) demo-out
