# Set-up and the two entry points of the README: `make demo` (main job on the embedded
# digits) and `make test` (the test suite). Both create .venv from requirements.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= runs/demo

.PHONY: demo test bench clean-venv

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# TF Serving's Python protos: its wheel asks for `tensorflow`, which would install a
	# second TensorFlow beside tensorflow-cpu; its real needs (grpcio, protobuf) come with TF.
	$(PY) -m pip install --quiet --no-deps tensorflow-serving-api==2.21.0
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

demo: $(VENV)/.installed
	$(PY) -m badhash_tf.pipeline --flagfile=flags/digits.cfg --output_dir=$(DEMO_DIR)

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) bench/bench_retrieval.py

clean-venv:
	rm -rf $(VENV)
