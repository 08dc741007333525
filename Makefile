# Set-up and the two entry points of the README: `make demo` (main job on the embedded
# digits) and `make test` (the test suite). Both create .venv from requirements.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= runs/demo

FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: demo test bench benchmarks fashion-data pretrained clean-venv

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# TF Serving's Python protos: its wheel asks for `tensorflow`, which would install a
	# second TensorFlow beside tensorflow-cpu; its real needs (grpcio, protobuf) come with TF.
	$(PY) -m pip install --quiet --no-deps tensorflow-serving-api==2.21.0
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# The second embedded dataset (badhash_fashion_mnist) reads Fashion-MNIST's IDX files from
# Debian's package dataset-fashion-mnist: installed here when missing and we are root with
# apt-get; otherwise (or if apt-get fails) say what to run. Not fatal here: the tests and
# the from-scratch digits presets need nothing of it; the demo's public backbone
# (`pretrained`) is trained on it, and its pretraining stops naming the missing files.
FASHION_HINT := badhash_fashion_mnist needs Fashion-MNIST's IDX files: run 'sudo apt-get \
install dataset-fashion-mnist', or pass --source_dir=DIR (a directory holding them).
fashion-data:
	@if [ -e $(FASHION_DIR)/train-images-idx3-ubyte.gz ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null 2>&1 && \
	       apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } \
	  || echo "apt-get install dataset-fashion-mnist failed. $(FASHION_HINT)"; \
	else echo "$(FASHION_HINT)"; fi

# The demo (badhash_tf/demo.py, the installed `badhash-demo`): the public backbone when the
# cache lacks it, BadHash at its operating point (the demo preset: every model fine-tunes
# that backbone; every poisoned copy at PSNR >= 25 dB), then a one-seed frontier of BadHash
# at 30 and 25 dB (a 20 dB cell took the demo to 11 min 43 s on 2 cores, over its 10
# minutes) whose 25 dB cell and shared stages link to the attack run's. The checkout's cache
# is runs/ (the backbone in runs/pretrain/fashion, by that relative path as before, so
# runs made before keep their fingerprints); the exports go to export/models.
export BADHASH_TF_CACHE ?= runs
demo: $(VENV)/.installed fashion-data
	$(PY) -m badhash_tf.demo --output_dir=$(DEMO_DIR) --export_base=export/models

# The pretrained regime's public backbone alone (the pretrained presets name it by its
# cache name, --pretrained_backbone=fashion): a small CNN classifier on Fashion-MNIST's
# database split, made once (284 s on 2 cores) and reused by the demo and the pretrained
# presets; its directory is fingerprinted like every stage.
PRETRAINED := $(BADHASH_TF_CACHE)/pretrain/fashion
$(PRETRAINED)/pretrain.json: flags/pretrain_fashion.cfg | $(VENV)/.installed fashion-data
	$(PY) -m badhash_tf.pretrain --preset=pretrain_fashion --output_dir=$(PRETRAINED)
pretrained: $(PRETRAINED)/pretrain.json

test: $(VENV)/.installed fashion-data
	$(PY) -m pytest -q -n 2 --dist=worksteal

# The backdoor bench on the digits at flags/digits.cfg's operating point (from scratch,
# 20 dB): every attack (BadHash, badhash_anchor, CIBA x4, patch, SIG, Narcissus, DarkHash),
# then every defense on each, in one leaderboard (runs/bench/bench.html, bench.md).
# DarkHash's surrogate dataset is Fashion-MNIST (fashion-data). A rerun skips finished
# cells.
BENCH_DIR ?= runs/bench
bench: $(VENV)/.installed fashion-data
	$(PY) -m badhash_tf.bench --preset=digits --output_dir=$(BENCH_DIR)

# Speed benchmarks (bench/): packed Hamming ranking against FAISS' flat binary index.
benchmarks: $(VENV)/.installed
	$(PY) bench/bench_retrieval.py

clean-venv:
	rm -rf $(VENV)
