# One entry point for everything. `make book` is the main job; `make test` is what CI runs.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Chapter parameters for `make book`; `make book SMOKE=1` runs every chapter on tiny sizes.
SMOKE ?= 0
DEVICE ?= auto

.PHONY: venv test test-all lint models book book-smoke bench demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install -q -e ".[test,book]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

venv: $(STAMP)

## The tests (what .ci/run calls): library tests, a smoke run of every chapter, a book build.
test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check cam_core tests bench

## Train (or verify) the embedded benchmark's small CNNs; cached under data/.
models: $(STAMP)
	$(BIN)/python -m cam_core train --all

## The main job: train/load models, execute every chapter with papermill, build the HTML book.
book: $(STAMP)
	$(BIN)/python -m cam_core book --device $(DEVICE) $(if $(filter 1,$(SMOKE)),--smoke,)

book-smoke:
	$(MAKE) book SMOKE=1

bench: $(STAMP)
	$(BIN)/python bench/run.py --device $(DEVICE)

demo: $(STAMP)
	$(BIN)/python -m cam_core demo --out results/demo.png

clean:
	rm -rf book/_build build results/cache
