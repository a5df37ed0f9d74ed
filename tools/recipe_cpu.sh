#!/usr/bin/env bash
# The DeepSeek-V3 recipe compressed for a CPU (docs/recipes.md): stage 1 pre-trains the debug model
# at 64 tokens with plain RoPE (batch ramp, LR phases, MTP lambda switch, gamma freeze, all at token
# counts), stages 2 and 3 extend the context to 256 and 512 tokens with YaRN, each from the previous
# stage's final checkpoint (`train --init-from`). Then every model is scored on the validation split
# at 512 tokens, and the switches are read back from the metrics. Idempotent: a finished stage is
# not retrained (`--resume auto`), an interrupted one continues.
#   make recipe-cpu            (or: bash tools/recipe_cpu.sh; RECIPE_DIR=... to write elsewhere)
set -euo pipefail
repo_root=$(cd "$(dirname "$0")/.." && pwd)
bin="${LATENTMOE_BUILD_DIR:-$repo_root/build}/latentmoe"
python_bin="$(cat "$repo_root/.venv-path")/bin/python"
out=${RECIPE_DIR:-$repo_root/runs/recipe-cpu}
cd "$repo_root"

stages=(recipe-cpu recipe-cpu-ext-4x recipe-cpu-ext-8x)
dirs=(1-pretrain 2-ext-4x 3-ext-8x)
# The newest committed checkpoint of a stage (an interrupted save has no COMMITTED marker).
final_checkpoint() { ls -d "$out/$1/checkpoints"/step-*/COMMITTED 2>/dev/null | sort | tail -1 | xargs -r dirname; }

previous=""
for i in 0 1 2; do
  dir="$out/${dirs[$i]}"
  echo "== stage $((i + 1)): ${stages[$i]} ($dir)"
  init=()
  [ -n "$previous" ] && init=(--init-from "$previous")
  mkdir -p "$dir"
  "$bin" train --config "${stages[$i]}" --set "checkpoint.dir=$dir/checkpoints" --set "logging.dir=$dir" \
    --resume auto ${init[@]+"${init[@]}"} 2>&1 | tee "$dir/train.log"  # pipefail: a failed stage stops the script
  previous=$(final_checkpoint "${dirs[$i]}")
done

# Every model at the last stage's length (512 tokens), on the same validation samples.
score() { "$bin" eval --config recipe-cpu-ext-8x "$@" 2>/dev/null; }
{
  echo "{\"model\": \"stage 1, plain RoPE (as trained)\", \"score\": $(score --checkpoint "$(final_checkpoint 1-pretrain)" --set model.rope_scaling.type=none)}"
  echo "{\"model\": \"stage 1 + YaRN x8, untrained\", \"score\": $(score --checkpoint "$(final_checkpoint 1-pretrain)")}"
  echo "{\"model\": \"stage 2 (ext 4x)\", \"score\": $(score --checkpoint "$(final_checkpoint 2-ext-4x)")}"
  echo "{\"model\": \"stage 3 (ext 8x)\", \"score\": $(score --checkpoint "$(final_checkpoint 3-ext-8x)")}"
} > "$out/scores.jsonl"
"$bin" config --config recipe-cpu --stage recipe-cpu-ext-4x --stage recipe-cpu-ext-8x --timeline --png "$out/timeline.png" \
  > "$out/timeline.txt"
cat "$out/timeline.txt"
"$python_bin" tools/recipe_summary.py "$out" | tee "$out/summary.md"
