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

# The demo: BadHash at its operating point (flags/demo.cfg: every model fine-tunes the
# shared public backbone made once per checkout by `pretrained`; every poisoned copy at
# PSNR >= 25 dB), then a one-seed frontier of BadHash at 30 and 25 dB (a 20 dB cell took
# the demo to 11 min 43 s on 2 cores, over its 10 minutes). The frontier's seed directory
# links the pipeline's finished stages (same flags: its surrogate, LabCLN and reference
# victim, and its BadHash run as the 25 dB cell) instead of training them twice.
DEMO_SEED := $(DEMO_DIR)/frontier/seed_0
demo: $(VENV)/.installed fashion-data pretrained
	$(PY) -m badhash_tf.pipeline --flagfile=flags/demo.cfg --baselines= \
	  --output_dir=$(DEMO_DIR)/attack
	mkdir -p $(DEMO_SEED)/psnr_25
	for stage in surrogate labcln reference_victim; do \
	  ln -sfn ../../attack/$$stage $(DEMO_SEED)/$$stage; done
	ln -sfn ../../../attack/badhash $(DEMO_SEED)/psnr_25/badhash
	$(PY) -m badhash_tf.frontier --flagfile=flags/demo.cfg --psnr_budgets=30,25 \
	  --methods=badhash --output_dir=$(DEMO_DIR)/frontier
	@echo "The attack at 25 dB: $(DEMO_DIR)/attack/report.md (samples.png and" \
	  "hash_space.png beside it); the frontier: $(DEMO_DIR)/frontier/frontier.md and" \
	  "frontier.png"

# The pretrained regime's public backbone (flags/*_pretrained.cfg read it from here): a
# small CNN classifier on Fashion-MNIST's database split, made once per checkout (284 s on
# 2 cores) and reused by the demo and the pretrained presets; its directory is
# fingerprinted like every stage.
PRETRAINED := runs/pretrain/fashion
$(PRETRAINED)/pretrain.json: flags/pretrain_fashion.cfg | $(VENV)/.installed fashion-data
	$(PY) -m badhash_tf.pretrain --flagfile=flags/pretrain_fashion.cfg --output_dir=$(PRETRAINED)
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
	$(PY) -m badhash_tf.bench --flagfile=flags/digits.cfg --output_dir=$(BENCH_DIR)

# Speed benchmarks (bench/): packed Hamming ranking against FAISS' flat binary index.
benchmarks: $(VENV)/.installed
	$(PY) bench/bench_retrieval.py

clean-venv:
	rm -rf $(VENV)
