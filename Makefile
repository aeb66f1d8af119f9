# One way to run every check. The README's two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint unit bench clean

# torch first, from the CPU wheel: a plain `torch` would pull a multi-GB CUDA build.
# On a machine that reaches download.pytorch.org, TORCH_INDEX adds its CPU index.
TORCH_INDEX ?=

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0 $(TORCH_INDEX)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/scopeguard check examples/scopeguard.yml --db out/scopeguard.db
	$(BIN)/scopeguard classify -c examples/scopeguard.yml --db out/scopeguard.db \
		--backlog examples/backlog.jsonl --id PAW-111 --format markdown

lint: $(STAMP)
	$(BIN)/ruff check .

unit: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint unit

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) out *.egg-info
