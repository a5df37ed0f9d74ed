#!/usr/bin/env python3
"""Training speed of latentmoe against HF transformers and torchtitan, side by side (issue 10).

One invocation runs, in alternating rounds and each in a fresh process with the same thread
count, the same model (exported from the latentmoe preset), the same sequence length, micro-batch
and global batch, the same dtype, MTP and the balance loss off, AdamW and gradient clipping:

  latentmoe   `latentmoe train` (bench/step_time.sh's settings; the bundled corpus)
  hf:<impl>   transformers' DeepseekV3ForCausalLM, sdpa attention, every experts implementation
              (eager, batched_mm, grouped_mm), eager and under torch.compile (whole model, as the
              HF Trainer's torch_compile does)
  titan       torchtitan 0.3.0's DeepSeek-V3 model code (its own modules; its SDPA inner attention,
              as flex attention needs block masks from its data loader), eager and under
              torch.compile (each block with fullgraph=True, as torchtitan's apply_compile does)

bf16 means what each framework's users get on one device: fp32 weights and optimizer, bf16 compute
(latentmoe's precision.compute_dtype=bf16, torch.autocast for the peers). The peers train on random
token ids held in memory (no data loading), latentmoe on its corpus.

It prints tokens/s (median over rounds of each run's median step after warm-up), peak RSS, the
achieved GFLOPS (training FLOPs per token from `latentmoe config --summary`, 3x forward), the GEMM
throughput torch reaches at the model's own GEMM shapes (forward, input-gradient and weight-gradient
GEMMs, FLOP-weighted; measured here, in the same dtype), the fraction of it each run achieves, and
latentmoe's ratio to the best HF implementation and to torchtitan, eager and compiled.

  bench/vs_peers.py --rounds 3                       # debug+small x fp32+bf16, all peers
  bench/vs_peers.py --presets debug --dtypes bf16 --rounds 1 --modes eager

torchtitan 0.3.0 and the few pure-Python modules it imports (spmd_types, tyro, einops) are installed
with `pip --no-deps --target` into ~/.cache/latentmoe/peers on first use; it imports a name torch
2.11 lacks (torch.distributed.fsdp.DataParallelMeshDims, a type hint), which is stubbed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("LATENTMOE_CACHE", Path.home() / ".cache" / "latentmoe"))
TITAN_DIR = CACHE / "peers" / "torchtitan-0.3.0"
TITAN_PACKAGES = [["--no-deps", "torchtitan==0.3.0", "spmd_types==0.2.3", "einops==0.8.2"], ["tyro==1.0.17"]]

# The shapes of issue 10's table (bench/step_time.sh): debug as its preset, small at seq 512, batch 4.
SHAPE_OVERRIDES = {
    "small": {"train.seq_len": 512, "train.micro_batch_size": 4, "train.global_batch_size": 4},
}
STEPS = {"debug": (30, 8), "small": (10, 3)}  # (steps, warm-up steps not timed)
HF_EXPERTS = ["eager", "batched_mm", "grouped_mm"]


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------
def latentmoe_overrides(preset: str, dtype: str) -> list[str]:
    sets = {"model.num_nextn_predict_layers": 0, "train.seq_aux_loss_alpha": 0, "data.valid_fraction": 0,
            "schedule.warmup": 2, "precision.compute_dtype": dtype, **SHAPE_OVERRIDES.get(preset, {})}
    return [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]


def run_checked(cmd: list[str], **kwargs) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        sys.exit(f"vs_peers: `{' '.join(map(str, cmd))}` failed (exit {result.returncode}):\n"
                 f"{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result.stdout


def describe_preset(binary: Path, preset: str, dtype: str, work: Path) -> dict:
    """Shapes, model FLOPs and an HF export of the preset, all from latentmoe itself."""
    sets = latentmoe_overrides(preset, dtype)
    dump = run_checked([binary, "config", "--config", preset, "--dump", *sets])

    def value(section: str, key: str) -> int:
        block = re.search(rf"^{section}:.*?(?=^\S)", dump + "\nend:", re.S | re.M).group(0)
        return int(re.search(rf"^\s+{key}: (\d+)", block, re.M).group(1))

    seq, micro, glob = value("train", "seq_len"), value("train", "micro_batch_size"), value("train", "global_batch_size")
    summary = run_checked([binary, "config", "--config", preset, "--summary", *sets])
    forward = float(re.search(r"forward FLOPs per token at seq_len \d+ \(causal\): ([\d.]+) GFLOP", summary).group(1))
    ckpt, hf_dir = work / f"{preset}-init", work / f"{preset}-hf"
    if not hf_dir.exists():
        run_checked([binary, "init", "--config", preset, *sets, "--out", ckpt])
        run_checked([binary, "convert", "--checkpoint", ckpt, "--to-hf", hf_dir, "--no-mtp"])
    return {"preset": preset, "dtype": dtype, "seq_len": seq, "micro_batch": micro, "global_batch": glob,
            "train_gflop_per_token": 3 * forward, "hf_dir": str(hf_dir)}


def ensure_torchtitan(python: str) -> None:
    if (TITAN_DIR / "torchtitan").is_dir() and (TITAN_DIR / "tyro").is_dir():
        return
    print(f"[vs_peers] installing torchtitan 0.3.0 into {TITAN_DIR}", flush=True)
    for packages in TITAN_PACKAGES:
        run_checked([python, "-m", "pip", "install", "-q", "--target", str(TITAN_DIR), *packages])


def spawn(cmd: list[str], threads: int, env_extra: dict | None = None) -> tuple[str, float, int]:
    """Runs one measurement in its own process; returns (stdout, peak RSS in GB, exit code)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), **(env_extra or {})}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        text = out.read()
        if proc.returncode != 0:
            text += "\n" + err.read()[-3000:]
        return text, usage.ru_maxrss / 1e6, proc.returncode


def worker_result(text: str) -> dict | None:
    """The JSON a worker prints on its `RESULT ` line, or None."""
    return next((json.loads(line[7:]) for line in text.splitlines() if line.startswith("RESULT ")), None)


def run_label(kind: str, variant: str, mode: str) -> str:
    return f"{kind}{':' + variant if variant else ''}{' ' + mode if mode else ''}"


def measure_latentmoe(binary: Path, shape: dict, threads: int, work: Path) -> dict:
    steps, warmup = STEPS[shape["preset"]]
    run_dir = Path(tempfile.mkdtemp(dir=work))
    cmd = [binary, "train", "--config", shape["preset"], *latentmoe_overrides(shape["preset"], shape["dtype"]),
           "--set", f"train.steps={steps}", "--set", "logging.interval=1", "--set", "checkpoint.interval=0",
           "--set", f"logging.dir={run_dir}/log", "--set", f"checkpoint.dir={run_dir}/ckpt"]
    text, rss, code = spawn(cmd, threads)
    if code != 0:
        return {"error": text[-1500:]}
    metrics = next(run_dir.glob("log/**/metrics.jsonl"))
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if '"step_time_s"' in line]
    times = [r["step_time_s"] for r in rows if r.get("step", 0) > warmup]
    return {"step_s": statistics.median(times), "rss_gb": rss}


def measure_worker(kind: str, variant: str, mode: str, shape: dict, threads: int) -> dict:
    steps, warmup = STEPS[shape["preset"]]
    cmd = [sys.executable, __file__, "--worker", kind, "--variant", variant, "--mode", mode,
           "--shape", json.dumps(shape), "--steps", str(steps), "--warmup", str(warmup), "--threads", str(threads)]
    text, rss, code = spawn(cmd, threads, {"PYTHONPATH": str(TITAN_DIR)} if kind == "titan" else None)
    result = worker_result(text)
    if code != 0 or result is None:
        return {"error": text[-1500:]}
    return {**result, "rss_gb": rss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", type=Path, default=REPO / "build" / "latentmoe")
    ap.add_argument("--presets", default="debug,small")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--modes", default="eager,compile", help="peer modes: eager, compile or both")
    ap.add_argument("--peers", default="hf,titan")
    ap.add_argument("--hf-experts", default=",".join(HF_EXPERTS),
                    help="HF experts implementations to run (the best is reported; batched_mm measured 7x slower "
                         "than grouped_mm, so a short run may leave it out)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, help="write every measurement and the summary as JSON")
    ap.add_argument("--worker", choices=["hf", "titan", "gemm"], help=argparse.SUPPRESS)
    ap.add_argument("--variant", default="", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="eager", help=argparse.SUPPRESS)
    ap.add_argument("--shape", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return run_worker(args)

    presets, dtypes = args.presets.split(","), args.dtypes.split(",")
    modes, peers = args.modes.split(","), args.peers.split(",")
    for name, values, allowed in (("--presets", presets, STEPS), ("--dtypes", dtypes, ("fp32", "bf16")),
                                  ("--modes", modes, ("eager", "compile")), ("--peers", peers, ("hf", "titan")),
                                  ("--hf-experts", args.hf_experts.split(","), HF_EXPERTS)):
        bad = [v for v in values if v not in allowed]
        if bad:
            sys.exit(f"vs_peers: {name} has {bad}; allowed: {', '.join(allowed)}")
    if not args.binary.is_file():
        sys.exit(f"vs_peers: no latentmoe binary at {args.binary} (run `make build`, or pass --binary)")
    if "titan" in peers:
        ensure_torchtitan(sys.executable)

    work = Path(tempfile.mkdtemp(prefix="vs_peers-"))
    rows = []
    for preset in presets:
        for dtype in dtypes:
            shape = describe_preset(args.binary, preset, dtype, work)
            gemm, _, code = spawn([sys.executable, __file__, "--worker", "gemm", "--shape", json.dumps(shape),
                                   "--threads", str(args.threads)], args.threads)
            gemm_result = worker_result(gemm)
            if code != 0 or gemm_result is None:
                sys.exit(f"vs_peers: GEMM peak measurement failed:\n{gemm[-2000:]}")
            candidates = [("latentmoe", "", "")]
            for mode in modes:
                if "hf" in peers:
                    candidates += [("hf", impl, mode) for impl in args.hf_experts.split(",")]
                if "titan" in peers:
                    candidates.append(("titan", "", mode))
            rows.append({"shape": shape, "gemm_gflops": gemm_result["gflops"], "gemm_best_shape_gflops": gemm_result["best"],
                         "candidates": candidates, "runs": {f"{k}|{v}|{m}": [] for k, v, m in candidates}})
    for round_index in range(args.rounds):
        for row in rows:
            shape, candidates = row["shape"], row["candidates"]
            order = candidates[round_index % len(candidates):] + candidates[:round_index % len(candidates)]
            for kind, variant, mode in order:
                started = time.time()
                if kind == "latentmoe":
                    result = measure_latentmoe(args.binary, shape, args.threads, work)
                else:
                    result = measure_worker(kind, variant, mode, shape, args.threads)
                row["runs"][f"{kind}|{variant}|{mode}"].append(result)
                label = run_label(kind, variant, mode)
                status = (f"{shape['global_batch'] * shape['seq_len'] / result['step_s']:,.0f} tok/s, "
                          f"RSS {result['rss_gb']:.2f} GB" if "step_s" in result else "FAILED: " + result["error"][-300:])
                print(f"[round {round_index + 1}/{args.rounds}] {shape['preset']} {shape['dtype']} {label}: {status} "
                      f"({time.time() - started:.0f} s)", flush=True)
    summary = summarize(rows)
    if args.out:
        args.out.write_text(json.dumps({"threads": args.threads, "rounds": args.rounds, "rows": rows,
                                        "summary": summary}, indent=1, default=str))


def summarize(rows: list[dict]) -> list[dict]:
    table = []
    for row in rows:
        shape = row["shape"]
        tokens = shape["global_batch"] * shape["seq_len"]
        entries = {}
        for key, runs in row["runs"].items():
            ok = [r for r in runs if "step_s" in r]
            if ok:
                tps = statistics.median(tokens / r["step_s"] for r in ok)
                entries[key] = {"tokens_per_s": tps, "rss_gb": statistics.median(r["rss_gb"] for r in ok),
                                "gflops": tps * shape["train_gflop_per_token"], "runs": len(ok), "failed": len(runs) - len(ok)}
            else:
                entries[key] = {"failed": len(runs), "error": runs[-1].get("error", "")[-300:] if runs else "not run"}
        ours = entries.get("latentmoe||", {}).get("tokens_per_s")
        print(f"\n## {shape['preset']} {shape['dtype']} (seq {shape['seq_len']}, micro-batch {shape['micro_batch']}, "
              f"global batch {shape['global_batch']}); GEMM at the model's shapes {row['gemm_gflops']:.0f} GFLOPS "
              f"(best shape {row['gemm_best_shape_gflops']:.0f})")
        print(f"{'run':<28}{'tokens/s':>10}{'peak RSS GB':>13}{'GFLOPS':>9}{'of GEMM':>9}{'latentmoe x':>13}")
        for key, e in entries.items():
            label = run_label(*key.split("|"))
            if "tokens_per_s" not in e:
                print(f"{label:<28}{'failed: ' + e['error'][-60:].strip()}")
                continue
            ratio = f"{ours / e['tokens_per_s']:.2f}" if ours else "-"
            print(f"{label:<28}{e['tokens_per_s']:>10,.0f}{e['rss_gb']:>13.2f}{e['gflops']:>9.0f}"
                  f"{100 * e['gflops'] / row['gemm_gflops']:>8.0f}%{ratio:>13}")
        best = {}
        for mode in ("eager", "compile"):
            for kind in ("hf", "titan"):
                found = [(e["tokens_per_s"], k) for k, e in entries.items()
                         if k.startswith(kind + "|") and k.endswith("|" + mode) and "tokens_per_s" in e]
                if found:
                    best[f"{kind} {mode}"] = max(found)
        ratios = {name: ours / tps for name, (tps, _) in best.items()} if ours else {}
        if ratios:
            print("latentmoe / best: " + ", ".join(f"{name} ({best[name][1].split('|')[1] or 'its own'}) {r:.2f}x"
                                                  for name, r in ratios.items()))
        table.append({"preset": shape["preset"], "dtype": shape["dtype"], "entries": entries,
                      "best": {k: {"tokens_per_s": v[0], "run": v[1]} for k, v in best.items()}, "ratios": ratios,
                      "gemm_gflops": row["gemm_gflops"]})
    return table


# --------------------------------------------------------------------------------------------
# Workers (one process each)
# --------------------------------------------------------------------------------------------
def run_worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    shape = json.loads(args.shape)
    if args.worker == "gemm":
        return gemm_worker(torch, shape)
    hf_config = json.loads((Path(shape["hf_dir"]) / "config.json").read_text())
    torch.manual_seed(0)
    if args.worker == "hf":
        model = build_hf(torch, shape, args.variant)
    else:
        model = build_titan(torch, hf_config, shape)
    model.train()
    if args.mode == "compile":
        if args.worker == "hf":
            model = torch.compile(model)
        else:
            torch._dynamo.config.capture_scalar_outputs = True
            for block in model.layers.values():
                block.compile(fullgraph=True)
    bf16 = shape["dtype"] == "bf16"
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, foreach=True)
    accumulation = shape["global_batch"] // shape["micro_batch"]
    vocab = hf_config["vocab_size"]
    generator = torch.Generator().manual_seed(1)
    batches = torch.randint(0, vocab, (4, shape["micro_batch"], shape["seq_len"] + 1), generator=generator)
    times = []
    for step in range(args.steps):
        started = time.perf_counter()
        for micro in range(accumulation):
            tokens = batches[(step * accumulation + micro) % len(batches)]
            inputs, targets = tokens[:, :-1], tokens[:, 1:]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model(inputs)
                logits = out.logits if hasattr(out, "logits") else out
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten()) / accumulation
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
        if not torch.isfinite(loss):
            sys.exit(f"loss is {loss.item()} at step {step}")
    timed = times[args.warmup:]
    print("RESULT " + json.dumps({"step_s": statistics.median(timed), "steps_timed": len(timed),
                                  "first_step_s": times[0], "loss": loss.item() * accumulation}), flush=True)


def build_hf(torch, shape: dict, experts: str):
    from transformers import DeepseekV3ForCausalLM

    model = DeepseekV3ForCausalLM.from_pretrained(shape["hf_dir"], dtype=torch.float32, attn_implementation="sdpa",
                                                  experts_implementation=experts)
    if model.config._experts_implementation != experts:
        raise SystemExit(f"transformers did not take experts_implementation={experts}")
    return model


def build_titan(torch, hf: dict, shape: dict):
    import torch.distributed.fsdp as fsdp

    if not hasattr(fsdp, "DataParallelMeshDims"):  # a type hint of torchtitan 0.3.0 that torch 2.11 lacks
        fsdp.DataParallelMeshDims = object
    from torchtitan.models import deepseek_v3 as dsv3
    from torchtitan.models.common import ComplexRoPE, Embedding, Linear, RMSNorm
    from torchtitan.models.common.attention import ScaledDotProductAttention

    if (hf.get("rope_scaling") or {}).get("type", "none") not in ("none", "default"):
        raise SystemExit("vs_peers: the torchtitan mapping covers presets without rope scaling")
    dim, rope_dim = hf["hidden_size"], hf["qk_rope_head_dim"]
    layers = dsv3._build_dsv3_layers(
        n_layers=hf["num_hidden_layers"], n_dense_layers=hf["first_k_dense_replace"], dim=dim,
        n_heads=hf["num_attention_heads"], q_lora_rank=hf["q_lora_rank"] or 0, kv_lora_rank=hf["kv_lora_rank"],
        qk_nope_head_dim=hf["qk_nope_head_dim"], qk_rope_head_dim=rope_dim, v_head_dim=hf["v_head_dim"], mscale=1.0,
        dense_hidden_dim=hf["intermediate_size"], moe_hidden_dim=hf["moe_intermediate_size"],
        num_experts=hf["n_routed_experts"], num_shared_experts=hf["n_shared_experts"],
        router_top_k=hf["num_experts_per_tok"], router_score_func=hf["scoring_func"],
        router_num_expert_groups=hf["n_group"], router_num_limited_groups=hf["topk_group"],
        router_route_scale=hf["routed_scaling_factor"], router_route_norm=hf["norm_topk_prob"],
        attn_backend="flex", moe_comm_backend="standard", non_blocking_capacity_factor=None,
        rope=ComplexRoPE.Config(dim=rope_dim, max_seq_len=shape["seq_len"], theta=hf.get("rope_theta", 10000.0)))
    for layer in layers:
        layer.attention.inner_attention = ScaledDotProductAttention.Config()
    vocab = hf["vocab_size"]
    config = dsv3.DeepSeekV3Model.Config(
        vocab_size=vocab, dim=dim, layers=layers, mtp_layers=[],
        tok_embeddings=Embedding.Config(num_embeddings=vocab, embedding_dim=dim, param_init=dsv3._EMBEDDING_INIT),
        norm=RMSNorm.Config(normalized_shape=dim, param_init=dsv3._NORM_INIT),
        lm_head=Linear.Config(in_features=dim, out_features=vocab, param_init=dsv3._output_linear_init(dim)))
    model = config.build()
    model.init_states()
    return model


def gemm_worker(torch, shape: dict) -> None:
    """GEMM throughput at the model's shapes: every projection's forward, input-gradient and
    weight-gradient GEMM, FLOP-weighted as they occur in a step (routed experts at their mean rows)."""
    hf = json.loads((Path(shape["hf_dir"]) / "config.json").read_text())
    dtype = torch.bfloat16 if shape["dtype"] == "bf16" else torch.float32
    tokens = shape["micro_batch"] * shape["seq_len"]
    h, heads = hf["hidden_size"], hf["num_attention_heads"]
    qk = hf["qk_nope_head_dim"] + hf["qk_rope_head_dim"]
    projections = []  # (rows, in, out, count per micro-batch)
    layers, dense = hf["num_hidden_layers"], hf["first_k_dense_replace"]
    q = [(h, hf["q_lora_rank"]), (hf["q_lora_rank"], heads * qk)] if hf["q_lora_rank"] else [(h, heads * qk)]
    attention = q + [(h, hf["kv_lora_rank"] + hf["qk_rope_head_dim"]),
                     (hf["kv_lora_rank"], heads * (hf["qk_nope_head_dim"] + hf["v_head_dim"])), (heads * hf["v_head_dim"], h)]
    projections += [(tokens, i, o, layers) for i, o in attention]
    projections += [(tokens, h, 2 * hf["intermediate_size"], dense), (tokens, hf["intermediate_size"], h, dense)]
    inner, experts, k = hf["moe_intermediate_size"], hf["n_routed_experts"], hf["num_experts_per_tok"]
    shared = inner * hf["n_shared_experts"]
    moe_layers = layers - dense
    projections += [(tokens, h, 2 * shared, moe_layers), (tokens, shared, h, moe_layers)]
    rows = max(1, tokens * k // experts)
    projections += [(rows, h, 2 * inner, moe_layers * experts), (rows, inner, h, moe_layers * experts)]
    projections.append((tokens, h, hf["vocab_size"], 1))
    total_flops, total_time, best = 0.0, 0.0, 0.0
    for m, kin, nout, count in projections:
        x, w, g = (torch.randn(m, kin, dtype=dtype), torch.randn(nout, kin, dtype=dtype), torch.randn(m, nout, dtype=dtype))
        for op in (lambda: torch.mm(x, w.t()), lambda: torch.mm(g, w), lambda: torch.mm(g.t(), x)):
            op()
            reps, started = 0, time.perf_counter()
            while reps < 3 or time.perf_counter() - started < 0.2:
                op()
                reps += 1
            seconds = (time.perf_counter() - started) / reps
            flops = 2.0 * m * kin * nout
            best = max(best, flops / seconds / 1e9)
            total_flops += flops * count
            total_time += seconds * count
    print("RESULT " + json.dumps({"gflops": total_flops / total_time / 1e9, "best": best}), flush=True)


if __name__ == "__main__":
    main()
