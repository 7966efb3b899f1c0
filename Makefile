# The README's two commands: `make demo` (main job) and `make test`.
# Both create the virtual environment in .venv on first use and reuse it after.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test fuzz install bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sim4seg demo --out demo-out

test: $(STAMP)
	$(BIN)/python -m pytest

# The fuzz suite (tests/fuzz) with the long hypothesis profile: thousands of examples per parser.
# `make test` runs the same properties with the bounded `ci` profile.
fuzz: $(STAMP)
	SIM4SEG_FUZZ_PROFILE=fuzz $(BIN)/python -m pytest tests/fuzz --hypothesis-show-statistics -p no:cacheprovider

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) demo-out
