PY ?= python3
DEMO ?= demo

.PHONY: setup demo test test-only test-loaded bench

setup:
	bash scripts/setup.sh

# The main job on the simulated rig: record -> calibrate -> sync -> build-dataset -> train -> evaluate.
# `make demo PHONE=opencamera:sim` records with the simulated Open Camera (0.5 s a photo) instead.
demo: setup
	bash scripts/demo.sh $(DEMO)

test: setup test-only

test-only:
	$(PY) -m pytest

# the suite 3 times in a row with every core kept busy by scripts/busy_loop.py: it must pass
test-loaded:
	PY=$(PY) bash scripts/test_loaded.sh

bench:  # each prints its ratio; dff_accuracy.py trains for minutes
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done
