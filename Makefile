# The two commands of the README:  `make train`  and  `make test`.
# Both set everything up first (idempotent; the venv with torch lives in ~/.cache/latentmoe).
SHELL := /bin/bash
BUILD ?= build
CONFIG ?= debug
CMAKE_ARGS ?=
export LATENTMOE_CACHE ?= $(HOME)/.cache/latentmoe

.PHONY: all setup configure build test train data docs bench gpu-check clean

all: build

setup:
	@bash tools/setup.sh

# Configure once; afterwards ninja re-runs cmake by itself when a CMakeLists.txt changes.
configure: setup
	@if [ ! -f $(BUILD)/build.ninja ]; then \
	  cmake -S . -B $(BUILD) -G Ninja -DLATENTMOE_PYTHON="$$(cat .venv-path)/bin/python" $(CMAKE_ARGS); \
	fi

build: configure
	@cmake --build $(BUILD) --parallel $$(nproc)

test: build
	@bash tools/run_tests.sh $(BUILD)

# Until the trainer lands, the main job validates the config and prints its summary.
train: build
	@./$(BUILD)/latentmoe version
	@./$(BUILD)/latentmoe config --config $(CONFIG)

# The default corpus as a Megatron dataset (prepared once; ~1 s).
DEFAULT_CORPUS := /usr/share/doc/python3.11/html/_sources
data: build
	@if [ ! -f $(BUILD)/data/python-docs.idx ]; then \
	  ./$(BUILD)/latentmoe prepare-data --input $(DEFAULT_CORPUS) --output $(BUILD)/data/python-docs; \
	fi

# Regenerate docs/configuration.md from the schema.
docs: build
	@./$(BUILD)/latentmoe config --docs > docs/configuration.md

bench: build
	@for b in $(BUILD)/bench/bench_*; do echo "== $$b"; $$b; done

gpu-check:
	@bash tools/gpu_check.sh

clean:
	rm -rf $(BUILD)
