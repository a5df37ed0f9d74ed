#!/usr/bin/env python3
"""Plot a training run's curves (metrics.jsonl in logging.dir) to a PNG.

    python tools/plot_run.py runs/debug [--out runs/debug/curves.png] [--entropy 6.89]
"""
import argparse
import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path)
    parser.add_argument("--entropy", type=float, help="draw the unigram entropy (nats) as a reference line")
    args = parser.parse_args()
    rows = [json.loads(line) for line in (args.run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in rows if "loss/lm" in r]
    valid = [r for r in rows if "valid/loss" in r]
    if not train:
        raise SystemExit(f"{args.run_dir}/metrics.jsonl has no training steps")
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(12, 4.5))
    steps = [r["step"] for r in train]
    ax_loss.plot(steps, [r["loss/lm"] for r in train], label="train LM loss", linewidth=1)
    if any(r.get("loss/mtp") for r in train):
        ax_loss.plot(steps, [r["loss/mtp"] for r in train], label="train MTP loss (depth 1)", linewidth=1, alpha=0.7)
    if valid:
        ax_loss.plot([r["step"] for r in valid], [r["valid/loss"] for r in valid], "o-", label="validation loss")
    if args.entropy:
        ax_loss.axhline(args.entropy, color="gray", linestyle="--", label=f"unigram entropy {args.entropy:.2f}")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("nats / token")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_lr.plot(steps, [r["lr"] for r in train], color="tab:green")
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("learning rate")
    ax_lr.grid(alpha=0.3)
    fig.suptitle(f"{args.run_dir}: {len(train)} steps")
    fig.tight_layout()
    out = args.out or args.run_dir / "curves.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
