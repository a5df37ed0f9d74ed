#!/usr/bin/env python3
"""FP8 loss experiment (docs/fp8.md): the small preset trained in bf16, in the FP8 blockwise recipe
(CPU emulation) and with one FP8 scale per tensor (the negative control), same seeds, same data.

  python bench/fp8_loss.py [--steps 300] [--seeds 1234 4321] [--out docs/fp8]

Writes <runs>/<variant>-seed<S>/metrics.jsonl per run, <out>/fp8_loss.json with the summary
and <out>/curves.svg. Smoothed training loss: the mean of loss/lm over the last --window steps.
"""
import argparse
import json
import os
import subprocess
import sys
import time

VARIANTS = {
    "bf16": [],
    # The noise floor: the same bf16 training with the GEMMs' rounding done another valid way
    # (fp32 kernels on bf16-rounded operands instead of the CPU's native bf16 kernels).
    "bf16-emulated-gemm": ["precision.cpu_low_precision_gemm=emulated"],
    "fp8-blockwise": ["precision.fp8=blockwise"],
    "fp8-tensorwise": ["precision.fp8=tensorwise"],
}


def run(binary, variant, seed, args, run_dir):
    overrides = [
        f"seed={seed}", f"train.steps={args.steps}", f"schedule.warmup={max(1, args.steps // 10)}",
        f"train.seq_len={args.seq_len}", f"train.global_batch_size={args.batch}",
        f"train.micro_batch_size={args.batch}", "precision.compute_dtype=bf16",
        f"train.eval_interval={args.steps}", f"logging.dir={run_dir}", f"checkpoint.dir={run_dir}/checkpoints",
        "checkpoint.interval=0", "logging.tensorboard=false", f"logging.interval={args.log_interval}",
    ] + VARIANTS[variant]
    cmd = [binary, "train", "--config", "small"]
    for o in overrides:
        cmd += ["--set", o]
    start = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.time() - start


def summarize(run_dir, window):
    lm, total, valid = [], [], None
    fp8 = {}
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if "loss/lm" in r:
                lm.append(r["loss/lm"])
                total.append(r["loss/total"])
            if "valid/loss" in r:
                valid = r["valid/loss"]
            if any(k.startswith("fp8/") for k in r):
                fp8 = {k: v for k, v in r.items() if k.startswith("fp8/")}
    mean = lambda xs: sum(xs[-window:]) / len(xs[-window:])
    return {"smoothed_lm": mean(lm), "smoothed_total": mean(total), "valid_loss": valid, "lm_curve": lm,
            "last_fp8_stats": fp8}


def svg(results, steps, path, window=20):
    window = max(1, min(window, steps // 10))
    w, h, pad = 720, 420, 50
    colors = {"bf16": "#1f77b4", "fp8-blockwise": "#d62728", "fp8-tensorwise": "#2ca02c", "bf16-emulated-gemm": "#7f7f7f"}
    curves = []
    for key, r in results.items():
        lm = r["lm_curve"]
        smooth = [sum(lm[max(0, i - window + 1):i + 1]) / len(lm[max(0, i - window + 1):i + 1]) for i in range(len(lm))]
        curves.append((key, smooth))
    lo = min(min(c[window:]) for _, c in curves)
    hi = max(max(c[window:]) for _, c in curves)
    x = lambda i: pad + (w - 2 * pad) * i / max(1, steps - 1)
    y = lambda v: h - pad - (h - 2 * pad) * (v - lo) / max(1e-9, hi - lo)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{pad}" y="20">small preset, training LM loss ({window}-step moving mean) vs step</text>']
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        out.append(f'<text x="5" y="{y(v) + 4:.1f}">{v:.2f}</text>'
                   f'<line x1="{pad}" x2="{w - pad}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
    seeds = sorted({r["seed"] for r in results.values()})
    for n, (key, c) in enumerate(curves):
        variant = key.split("/")[0]
        dash = "" if results[key]["seed"] == seeds[0] else ' stroke-dasharray="5,3"'
        pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(c) if i >= window)
        out.append(f'<polyline fill="none" stroke="{colors[variant]}" stroke-width="1.5"{dash} points="{pts}"/>')
        out.append(f'<text x="{w - pad - 190}" y="{40 + 15 * n}" fill="{colors[variant]}">{key}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default="build/latentmoe")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=[1234, 4321])
    p.add_argument("--variants", nargs="+", default=["bf16", "fp8-blockwise", "fp8-tensorwise"], choices=list(VARIANTS))
    p.add_argument("--control-seeds", type=int, default=1, help="seeds that also run the tensorwise control")
    p.add_argument("--window", type=int, default=50)
    p.add_argument("--merge", action="store_true", help="keep the runs already in <out>/fp8_loss.json")
    p.add_argument("--log-interval", type=int, default=50)
    p.add_argument("--out", default="docs/fp8", help="summary JSON and curves")
    p.add_argument("--runs", default="runs/fp8_loss", help="the runs' logs (and final checkpoints)")
    args = p.parse_args()
    summary_path = os.path.join(args.out, "fp8_loss.json")
    results = {}
    if args.merge and os.path.exists(summary_path):  # add runs to an earlier invocation's
        with open(summary_path) as f:
            results = json.load(f)["results"]
    for n, seed in enumerate(args.seeds):
        for variant in args.variants:
            if variant == "fp8-tensorwise" and n >= args.control_seeds:
                continue
            run_dir = os.path.join(args.runs, f"{variant}-seed{seed}")
            if os.path.exists(run_dir):
                subprocess.run(["rm", "-rf", run_dir], check=True)
            seconds = run(args.binary, variant, seed, args, run_dir)
            r = summarize(run_dir, args.window)
            r.update(seed=seed, variant=variant, seconds=seconds)
            results[f"{variant}/seed{seed}"] = r
            print(f"{variant} seed {seed}: smoothed lm {r['smoothed_lm']:.4f}, valid {r['valid_loss']:.4f} "
                  f"({seconds:.0f} s)", flush=True)
            with open(summary_path, "w") as f:
                json.dump({"args": vars(args), "results": results}, f, indent=1)
    for seed in sorted({r["seed"] for r in results.values()}):
        base = results.get(f"bf16/seed{seed}")
        for variant in VARIANTS:
            r = results.get(f"{variant}/seed{seed}")
            if not base or not r or variant == "bf16":
                continue
            r["rel_diff_smoothed_lm"] = (r["smoothed_lm"] - base["smoothed_lm"]) / base["smoothed_lm"]
            r["rel_diff_valid"] = (r["valid_loss"] - base["valid_loss"]) / base["valid_loss"]
            print(f"{variant} seed {seed}: vs bf16 smoothed lm {100 * r['rel_diff_smoothed_lm']:+.3f} %, "
                  f"valid {100 * r['rel_diff_valid']:+.3f} %")
    with open(summary_path, "w") as f:
        json.dump({"args": vars(args), "results": results}, f, indent=1)
    svg(results, args.steps, os.path.join(args.out, "curves.svg"))


if __name__ == "__main__":
    sys.exit(main())
