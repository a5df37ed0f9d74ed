#!/usr/bin/env bash
# Median training step time and peak RSS of `latentmoe train`, as docs/performance.md measures it:
# MTP and the balance loss off, no validation, one checkpoint at the end, median step_time_s
# after step 3 (metrics.jsonl) and peak RSS from /usr/bin/time. The small preset runs at seq 512,
# micro-batch = global batch = 4 (the shapes of issue 10's peer comparison).
#
#   bench/step_time.sh BINARY PRESET fp32|bf16 STEPS [--set key=value ...]
#   e.g. bench/step_time.sh build/latentmoe small bf16 7
# Compare two builds in alternating rounds (the machine's speed drifts over minutes).
set -euo pipefail
binary=$1 preset=$2 dtype=$3 steps=$4
shift 4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
shape=()
if [[ "$preset" == small ]]; then
  shape=(--set train.seq_len=512 --set train.micro_batch_size=4 --set train.global_batch_size=4)
fi
if ! /usr/bin/time -f "%M" -o "$work/rss" "$binary" train --config "$preset" --set "train.steps=$steps" \
    --set schedule.warmup=2 --set model.num_nextn_predict_layers=0 --set train.seq_aux_loss_alpha=0 \
    --set data.valid_fraction=0 --set logging.interval=1 --set "precision.compute_dtype=$dtype" \
    --set "logging.dir=$work/log" --set "checkpoint.dir=$work/ckpt" --set checkpoint.interval=0 \
    "${shape[@]}" "$@" > "$work/out" 2>&1; then
  tail -5 "$work/out" >&2
  exit 1
fi
python3 - "$work" <<'PY'
import glob, json, statistics, sys
work = sys.argv[1]
rows = [json.loads(line) for line in open(glob.glob(work + "/log/**/metrics.jsonl", recursive=True)[0])
        if '"step_time_s"' in line]
times = [r["step_time_s"] for r in rows if r.get("step", 0) > 3]

rss = int(open(work + "/rss").read().split()[-1]) / 1e6
print(f"median_step_s={statistics.median(times):.4f} steps_timed={len(times)} peak_rss_gb={rss:.2f}")
PY
