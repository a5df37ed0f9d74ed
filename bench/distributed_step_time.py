"""Step time and traffic of the distributed layouts on this machine: one process vs DP=2, EP=2 and
EP=2 + ZeRO-1, each rank one thread, launched with torchrun, interleaved over several rounds.

    python bench/distributed_step_time.py [--steps 50] [--rounds 2] [--config debug]

Prints one row per layout and round: median step time of the steps after warm-up, tokens/s,
bytes sent per rank per step (forward all-to-all, gradient/parameter collectives), final loss.
"""
import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
LAYOUTS = {
    "1 process": (1, []),
    "DP=2": (2, []),
    "EP=2": (2, ["--set", "parallel.ep=2"]),
    "EP=2 + ZeRO-1": (2, ["--set", "parallel.ep=2", "--set", "parallel.zero_stage=1"]),
}


def run(binary: pathlib.Path, torchrun: pathlib.Path, world: int, extra: list[str], args, out: pathlib.Path, port: int) -> list[dict]:
    train = [str(binary), "train", "--config", args.config, "--set", f"train.steps={args.steps}", "--set", "schedule.warmup=5",
             "--set", "train.eval_interval=0", "--set", "checkpoint.interval=0", "--set", f"checkpoint.dir={out / 'ckpt'}",
             "--set", f"logging.dir={out}", *extra]
    cmd = train if world == 1 else [str(torchrun), "--no-python", "--nproc-per-node", str(world), "--master-port", str(port), *train]
    result = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if "loss/total" in l]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--config", default="debug")
    parser.add_argument("--build", default=str(REPO / "build"))
    args = parser.parse_args()
    binary = pathlib.Path(args.build) / "latentmoe"
    torchrun = pathlib.Path(sys.executable).parent / "torchrun"
    warm = min(5, args.steps - 1)
    print(f"{'layout':<16} {'round':>5} {'s/step':>7} {'tokens/s':>9} {'all-to-all MB':>14} {'DP MB':>7}  final loss")
    for round_ in range(args.rounds):
        for i, (name, (world, extra)) in enumerate(LAYOUTS.items()):
            out = pathlib.Path(tempfile.mkdtemp(prefix="latentmoe-bench-"))
            try:
                rows = run(binary, torchrun, world, extra, args, out, 29700 + 10 * round_ + i)
            finally:
                shutil.rmtree(out, ignore_errors=True)
            steady = rows[warm:]
            med = lambda key: statistics.median(r.get(key, 0.0) for r in steady)  # noqa: E731
            print(f"{name:<16} {round_ + 1:>5} {med('step_time_s'):>7.3f} {med('tokens_per_s'):>9.0f} "
                  f"{med('ep/all_to_all_bytes') / 1e6:>14.2f} {med('dp/reduce_bytes') / 1e6:>7.2f}  {rows[-1]['loss/total']:.6f}")


if __name__ == "__main__":
    main()
