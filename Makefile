# The two set-up commands of the README: `make demo` and `make test`. Each bootstraps .venv.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: demo test bench venv

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-[0-9a-f]*
	touch $(STAMP)

# Training (torch, transformers, DeepSpeed) is several GB: the demo's loop, the tests and training need it.
TRAIN_STAMP := $(VENV)/.installed-train-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
$(TRAIN_STAMP): $(STAMP)
	$(VENV)/bin/python -m pip install --quiet -e '.[dev,train]'
	rm -f $(VENV)/.installed-train-*
	touch $(TRAIN_STAMP)

venv: $(STAMP)

demo: $(TRAIN_STAMP)
	$(VENV)/bin/millpond demo

# pytest exits 5 when it collects no test: not a failure of the project.
test: $(TRAIN_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	SPARK_LOCAL_IP=127.0.0.1 $(VENV)/bin/python -m pytest $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc

# e.g. make bench BENCH_ARGS="ingest --records 1000000"
BENCH_ARGS ?= curate --docs 100000
bench: $(STAMP)
	SPARK_LOCAL_IP=127.0.0.1 $(VENV)/bin/python -m benchmarks $(BENCH_ARGS)
