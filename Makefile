# The two commands of the README:  `make train`  and  `make test`.
# Both set everything up first (idempotent; the venv with torch lives in ~/.cache/latentmoe).
SHELL := /bin/bash
BUILD ?= build
CONFIG ?= debug
CMAKE_ARGS ?=
export LATENTMOE_CACHE ?= $(HOME)/.cache/latentmoe

.PHONY: all setup configure build test test-asan fuzz train data demo-dist docs bench golden recipe-cpu gpu-check clean

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

# The torch-free core (config, data, tokenizer, safetensors/HF-config parsers, CI checks) built
# with clang under ASan + UBSan in build-asan/, and its unit tests. `make test` runs it too.
test-asan: setup
	@bash tools/sanitizers.sh test

# Every libFuzzer target for FUZZ_SECONDS each on its committed corpus (docs/fuzzing.md);
# FUZZ_TARGETS picks some of them.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
fuzz: setup
	@bash tools/sanitizers.sh fuzz $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# The main job: train the preset (default: debug on the bundled corpus), resuming a previous run
# of it if one exists, then sample from the newest checkpoint.
PROMPT ?= The Python
train: build
	@./$(BUILD)/latentmoe config --config $(CONFIG) --summary
	@./$(BUILD)/latentmoe train --config $(CONFIG) --resume auto
	@ckpt=$$(ls -d runs/$(CONFIG)/checkpoints/step-* 2>/dev/null | tail -n 1); \
	  if [ -n "$$ckpt" ]; then echo "--- sample from $$ckpt:"; \
	    ./$(BUILD)/latentmoe generate --checkpoint $$ckpt --prompt "$(PROMPT)" --max-tokens 48 --temperature 0.8 --top-p 0.95 --seed 1; fi

# The default corpus as a Megatron dataset (prepared once; ~1 s).
DEFAULT_CORPUS := /usr/share/doc/python3.11/html/_sources
data: build
	@if [ ! -f $(BUILD)/data/python-docs.idx ]; then \
	  ./$(BUILD)/latentmoe prepare-data --input $(DEFAULT_CORPUS) --output $(BUILD)/data/python-docs; \
	fi

# Two data-parallel CPU processes through torchrun (one thread each), 50 steps of the debug preset.
# DEMO_ARGS adds settings, e.g. DEMO_ARGS="--set parallel.ep=2".
DEMO_ARGS ?=
demo-dist: build
	@OMP_NUM_THREADS=1 "$$(cat .venv-path)/bin/torchrun" --no-python --nproc-per-node 2 --master-port 29571 \
	  ./$(BUILD)/latentmoe train --config debug --set train.steps=50 --set schedule.warmup=5 \
	  --set checkpoint.dir=runs/demo-dist/checkpoints --set logging.dir=runs/demo-dist $(DEMO_ARGS)

# Regenerate docs/configuration.md from the schema.
docs: build
	@./$(BUILD)/latentmoe config --docs > docs/configuration.md

bench: build
	@for b in $(BUILD)/bench/bench_*; do echo "== $$b"; $$b; done

# Re-record the committed golden runs (tests/golden/*.json) after an intended numerical change;
# GOLDEN_RUNS picks some of them (tiny debug-fp32 debug-bf16). docs/ci.md explains when.
GOLDEN_RUNS ?=
golden: build
	@LATENTMOE_BUILD_DIR=$(BUILD) bash tools/golden_runs.sh record $(GOLDEN_RUNS)

# The DeepSeek-V3 recipe compressed for a CPU, all three stages (~2.5 min on 2 cores; docs/recipes.md).
recipe-cpu: build
	@LATENTMOE_BUILD_DIR=$(BUILD) bash tools/recipe_cpu.sh

gpu-check:
	@bash tools/gpu_check.sh

clean:
	rm -rf $(BUILD)
