# Two targets a new user types after cloning: `make demo` and `make test`.
# Each does its own set-up, idempotently: a virtual environment in .venv with the
# pinned torch/torchvision, the package in editable mode, and (as root on Debian)
# the WordNet 3.0 packages.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
EIC := $(VENV)/bin/eic-build
STAMP := $(VENV)/.installed
DEMO ?= demo_out

.PHONY: demo test lint bench setup wordnet clean

setup: $(STAMP) wordnet

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# WordNet 3.0 from Debian (wordnet-base, wordnet-sense-index) when running as root
# and it is missing; otherwise `python -m nltk.downloader wordnet` or --wordnet-dir.
wordnet:
	@if [ ! -f /usr/share/wordnet/data.noun ] || [ ! -f /usr/share/wordnet/index.sense ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -qq --no-install-recommends wordnet-base wordnet-sense-index >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq --no-install-recommends wordnet-base wordnet-sense-index)) \
	    || echo "warning: could not install WordNet; see README"; \
	  else echo "note: WordNet 3.0 not in /usr/share/wordnet; see README (nltk.download or --wordnet-dir)"; fi; \
	fi

demo: setup
	rm -rf $(DEMO)
	$(EIC) synth $(DEMO)/downloads --layout downloads
	$(EIC) scan $(DEMO)/downloads/ILSVRC2012 --split train --out $(DEMO)/manifests/train
	$(EIC) scan $(DEMO)/downloads/ILSVRC2012 --split val --out $(DEMO)/manifests/val
	$(EIC) scan $(DEMO)/downloads/winter21_whole.tar.gz $(DEMO)/downloads/Annotation.tar.gz --out $(DEMO)/manifests/21k \
	  --classes data_manifests/eic_classes.parquet
	$(EIC) expand-classes --out $(DEMO)/eic_classes.parquet
	$(EIC) expand-classes --explain n02084071
	$(EIC) assemble $(DEMO)/manifests/train $(DEMO)/manifests/val $(DEMO)/manifests/21k --out $(DEMO)/eic \
	  --classes $(DEMO)/eic_classes.parquet --val-per-class 5 --max-train-per-class 20 --min-train-per-class 10
	$(EIC) features $(DEMO)/eic/val --out $(DEMO)/features/val --weights random --crop 64 --resize 73
	$(EIC) stats EIC/Train=$(DEMO)/eic/train EIC/Val=$(DEMO)/eic/val \
	  ILSVRC/Train=$(DEMO)/manifests/train ILSVRC/Val=$(DEMO)/manifests/val \
	  --classes $(DEMO)/eic_classes.parquet --features EIC/Val=$(DEMO)/features/val
	$(EIC) train-baseline $(DEMO)/eic/train --out $(DEMO)/rpn --tiny
	$(EIC) eval-baseline $(DEMO)/eic/val --out $(DEMO)/eval --checkpoint $(DEMO)/rpn/last.pt \
	  --method selective-search --method sliding-window --scales 256

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q --durations=10

bench: setup
	$(PY) benchmarks/bench_scan.py
	$(PY) benchmarks/bench_archive.py
	$(PY) benchmarks/bench_stats.py
	$(PY) benchmarks/bench_expand.py
	$(PY) benchmarks/bench_features.py
	$(PY) benchmarks/bench_distances.py
	$(PY) benchmarks/bench_audit.py
	$(PY) benchmarks/bench_eval.py
	$(PY) benchmarks/bench_rpn.py --width 0.125 --scales 256 --train-scale 256 --iters 10 --images-per-batch 4

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache
