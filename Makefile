# One way to run every check. The README's two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv browser demo test lint unit bench calibration evaluate clean

# The shipped calibration is fitted on our labelled open-source decisions plus the dev set.
DEV ?= ../shared/data/dev
OSS := models/data/oss-decisions
LABELLED := --products $(OSS)/products --products $(DEV)/products \
	--requests $(OSS)/requests.jsonl --requests $(DEV)/requests.jsonl

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

# Headless Chromium checks the HTML audit report (tests/test_audit_cli.py).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing chromium (Debian package) for the HTML report test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

demo: $(STAMP)
	$(BIN)/scopeguard check examples/scopeguard.yml --db out/scopeguard.db
	$(BIN)/scopeguard audit -c examples/scopeguard.yml --db out/scopeguard.db \
		--from-file examples/backlog.jsonl --format html -o out/audit.html
	$(BIN)/scopeguard audit -c examples/scopeguard.yml --db out/scopeguard.db \
		--from-file examples/backlog.jsonl --quiet
	@echo "HTML report: out/audit.html"

lint: $(STAMP)
	$(BIN)/ruff check .

unit: $(STAMP) browser
	$(BIN)/python -m pytest -q

test: lint unit

bench: $(STAMP)
	$(BIN)/python bench/audit.py
	$(BIN)/python bench/webhook.py

evaluate: $(STAMP)
	$(BIN)/scopeguard eval $(LABELLED) --json out/eval.json

calibration: $(STAMP)
	$(BIN)/scopeguard calibrate $(subst --requests,--labels,$(LABELLED)) \
		--out models/default-calibration.json

clean:
	rm -rf $(VENV) out *.egg-info
