# QFM-IQM: one Makefile for the commands users type (see README.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

GRPC_PORT    ?= 8001
HTTP_PORT    ?= 8000
METRICS_PORT ?= 8002

.PHONY: venv test heldout demo serve image-artifacts image bench synthetic pretrain bundle protocol ablation baselines distill accuracy clean-venv

# Create or update the virtual environment whenever the pinned requirements change.
# pip byte-compiles one file at a time; compileall on every core does it in ~23 s here. Not
# compiling at all is slower: the parallel test processes then compile the same modules at first
# import (tests 624 s instead of 454 s on a fresh clone). Its exit status is ignored, as pip ignores
# the same failures (files for newer Pythons inside packages, e.g. torch's py312_intrinsics.py).
$(STAMP): requirements.txt constraints.txt pyproject.toml core/pyproject.toml client/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-compile --no-deps -e ./core -e . -e ./client
	$(PY) -m compileall -q -j 0 $(VENV)/lib > /dev/null 2>&1 || true
	touch $@

venv: $(STAMP)

# Two workers (pytest-xdist), whole test files to one worker: most tests wait on a real server, a
# subprocess or a fixed load window, so two files at a time keep both cores busy. Session artifacts
# (the ONNX export, the banks, the fast repository) are made once for both (tests/conftest.py).
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# The held-out synthetic evaluation of the bundled model, recomputed from scratch (~4 min; outside
# `make test`, where tests/golden_scores.csv guards the bundle).
heldout: $(STAMP)
	$(PY) -m pytest -q -m heldout tests/test_cli.py

# The main job: serve the bundled model with a real Triton server on this CPU, score sample images
# through gRPC, print a table, stop the server.
demo: $(STAMP)
	$(PY) serving/demo.py

# Build the artifacts and the cpu-pip repository, then run tritonserver on localhost until Ctrl-C.
serve: $(STAMP)
	$(PY) serving/demo.py --prepare-only
	$(PY) serving/triton_server.py --repo triton_repo --grpc-port $(GRPC_PORT) --http-port $(HTTP_PORT) --metrics-port $(METRICS_PORT)

# What the serving image carries (checkpoint, ONNX students, bank) into build/image/artifacts, then the
# image itself on NVIDIA's Triton image (serving/container/Dockerfile; needs Docker and nvcr.io).
image-artifacts: $(STAMP)
	$(PY) serving/demo.py --prepare-only
	$(PY) serving/image_artifacts.py --out build/image/artifacts

IMAGE ?= qfm-iqm-triton:latest
image: image-artifacts
	docker build -f serving/container/Dockerfile -t $(IMAGE) .

# CPU benchmark set in one run, with the ratio table (see README "Results").
bench: $(STAMP)
	$(PY) benchmarks/bench_report.py

synthetic: $(STAMP)
	$(PY) training/data/build_synthetic.py

# Reproduce the bundled model in models/qfm_iqm (CPU, fixed seeds; README "Bundled model").
# Each step resumes or skips a finished run folder (and stops with an error on a folder made with
# another recipe or data set size: delete it to start over), so `make bundle` alone runs the chain.
data_cache/synthetic/train.csv: | $(STAMP)
	$(PY) training/data/build_synthetic.py

pretrain: $(STAMP) data_cache/synthetic/train.csv
	$(PY) training/train.py --config training/configs/synthetic_pretrain.yaml --out runs/synthetic_pretrain

# The paper's protocol on the LIVEC dev subset (80/20, 3 seeds, median), same recipe as the bundle.
protocol: pretrain
	$(PY) training/protocol.py --config training/configs/livec_finetune.yaml --dataset livec --repeats 3 --out runs/livec_protocol

bundle: protocol
	$(PY) training/train.py --config training/configs/bundled.yaml --out runs/bundled
	$(PY) training/package_model.py --run runs/bundled --out models/qfm_iqm --protocol runs/livec_protocol/protocol.json

# Issue #3's experiments on the LIVEC protocol splits, then one table + plot (runs/accuracy_report.*).
ABLATIONS := a_plain b_gate_decoder c_qfm d_qfm_scratch e_qfm_synthetic_init f_qfm_longer_unfrozen g_unfrozen_replay
ablation: pretrain
	for v in $(ABLATIONS); do test -f runs/ablation/$$v/protocol.json || \
	  $(PY) training/protocol.py --config training/configs/ablation/$$v.yaml --dataset livec --repeats 3 --out runs/ablation/$$v || exit 1; done

baselines: $(STAMP)
	$(PY) training/baselines.py --dataset livec --repeats 3 --out runs/baselines/livec.json

distill: pretrain
	$(PY) training/distill.py --config training/configs/distill_livec.yaml --dataset livec --repeats 3 --out runs/distill_livec
	$(PY) training/distill.py --config training/configs/distill_livec_synthinit.yaml --dataset livec --repeats 3 --out runs/distill_livec_synthinit
	$(PY) training/distill.py --config training/configs/distill_synthinit_replay.yaml --dataset livec --repeats 3 --out runs/distill_synthinit_replay

accuracy: ablation baselines distill
	$(PY) training/accuracy_report.py --out runs/accuracy_report

clean-venv:
	rm -rf $(VENV)
