#!/usr/bin/env python3
"""Plot a recipe's timeline (the JSON `latentmoe config --timeline --png FILE` writes beside FILE):
LR, global batch, MTP lambda, bias speed gamma and sequence length against tokens, one panel each,
stage boundaries dashed.

    python tools/plot_timeline.py timeline.png.json --out timeline.png
"""
import argparse
import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def human(tokens: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(tokens) >= scale:
            return f"{tokens / scale:.4g}{suffix}"
    return f"{tokens:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    args = parser.parse_args()
    t = json.loads(args.data.read_text())
    samples = t["samples"]
    panels = [("lr", "learning rate", True), ("batch", "global batch (sequences)", False),
              ("mtp_lambda", "MTP λ", False), ("gamma", "bias speed γ", False), ("seq_len", "sequence length", True)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 10), sharex=True)
    boundaries, total = [], 0
    for tokens in t["stage_tokens"]:
        total += tokens
        boundaries.append(total)
    for ax, (key, label, log) in zip(axes, panels):
        for stage, name in enumerate(t["stages"]):
            points = [s for s in samples if s["stage"] == stage]
            ax.step([p["tokens"] for p in points], [p[key] for p in points], where="post", linewidth=1.4,
                    label=name if key == "lr" else None)
        if log:
            ax.set_yscale("log")
        for b in boundaries[:-1]:
            ax.axvline(b, color="grey", linestyle="--", linewidth=0.8)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower left", fontsize=8)
    axes[-1].set_xlabel("tokens (whole recipe)")
    ticks = axes[-1].get_xticks()
    axes[-1].set_xticks(ticks)
    axes[-1].set_xticklabels([human(x) for x in ticks])
    axes[-1].set_xlim(0, total)
    fig.suptitle(" → ".join(t["stages"]) + f": {human(total)} tokens")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
