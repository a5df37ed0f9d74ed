#!/usr/bin/env python3
"""Summarize a compressed-recipe run (tools/recipe_cpu.sh): where each switch of stage 1 fired in
the metrics (tokens before the step), each stage's steps and tokens, and the validation scores at
512 tokens. Markdown on stdout.

    python tools/recipe_summary.py runs/recipe-cpu
"""
import json
import pathlib
import sys


def rows(run_dir: pathlib.Path) -> list[dict]:
    return [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if "loss/total" in l]


def main() -> None:
    out = pathlib.Path(sys.argv[1])
    stage1 = rows(out / "1-pretrain")
    seq = 64
    print("| switch (stage 1) | configured at | fired at step | tokens before that step |")
    print("|---|---|---|---|")
    switches = [
        ("batch reaches 32", "ramp end 40,960", lambda r: r["global_batch"] == 32),
        ("MTP λ 0.3 → 0.1", "276,480", lambda r: r["mtp_lambda"] == 0.1),
        ("cosine decay starts", "276,480", lambda r: r["lr"] < 3e-3 and r["step"] > 20),
        ("γ 0.01 → 0", "395,264", lambda r: r["bias_update_speed"] == 0.0),
        ("LR steps down to 1e-4", "404,992", lambda r: abs(r["lr"] - 1e-4) < 1e-12),
    ]
    for name, configured, fired in switches:
        first = next((r for r in stage1 if fired(r)), None)
        if first is None:
            print(f"| {name} | {configured} | never | |")
            continue
        before = int(first["tokens_seen"] - first["global_batch"] * seq)
        print(f"| {name} | {configured} | {first['step']} | {before:,} |")
    print()
    print("| stage | steps | tokens | final LM loss (train) |")
    print("|---|---|---|---|")
    for stage in ("1-pretrain", "2-ext-4x", "3-ext-8x"):
        r = rows(out / stage)
        print(f"| {stage} | {r[-1]['step']} | {int(r[-1]['tokens_seen']):,} | {r[-1]['loss/lm']:.4f} |")
    print()
    print("| model, scored at 512 tokens | validation loss (nats) | perplexity |")
    print("|---|---|---|")
    scores = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    for s in scores:
        print(f"| {s['model']} | {s['score']['valid_loss']:.4f} | {s['score']['perplexity']:.1f} |")
    before, after = scores[0]["score"]["valid_loss"], scores[-1]["score"]["valid_loss"]
    print()
    print(f"At 512 tokens the extension stages {'lower' if after < before else 'DO NOT lower'} the validation loss of "
          f"the pre-trained model: {before:.4f} -> {after:.4f} nats.")
    if after >= before:
        sys.exit(1)


if __name__ == "__main__":
    main()
