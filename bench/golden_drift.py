"""How far golden runs drift when only the environment changes, and whether deliberately wrong
changes still fail: the measurement behind the default tolerances of `train --golden`
(default_golden_tolerance in src/train/golden.cpp; docs/ci.md "Tolerances").

For each golden file it re-records the run at the reference thread count (twice: same environment
must be bit-identical), then at other thread counts (OMP_NUM_THREADS), and prints per metric the
largest per-step difference over the early steps and the largest window-mean difference after
them, next to the tolerances. Then it runs the real check (`--golden-mode tolerance`) against the
reference for each thread count and for three mutations (balancing sign flipped, rope base x5,
learning rate +10 %) and prints where each first fails. (On a 2-core machine torch caps its
intra-op threads at 2, so OMP_NUM_THREADS=3 runs 2 threads: only 1 differs from the default.)

    python bench/golden_drift.py [--threads 1] [--reference 2] [--golden tests/golden/tiny.json ...]
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
SCALARS = ["loss/total", "loss/lm", "loss/mtp", "loss/balance", "grad_norm"]
MUTATIONS = {
    "balancing sign flipped": ({"LATENTMOE_TEST_FLIP_BALANCE_SIGN": "1"}, []),
    "rope_theta x5": ({}, ["--set", "model.rope_theta=50000"]),
    "lr +10%": ({}, None),  # filled from the golden's own lr
}


def run(binary, golden, work, env=None, extra=(), check=None, write=None):
    out = pathlib.Path(tempfile.mkdtemp(dir=work))
    cmd = [str(binary), *golden["command"][1:], *extra, "--set", f"checkpoint.dir={out / 'ckpt'}",
           "--set", f"logging.dir={out / 'log'}"]
    if write:
        cmd += ["--golden", str(write), "--golden-write"]
    if check:
        cmd += ["--golden", str(check), "--golden-mode", "tolerance", "--report", str(out / "report.json")]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=REPO)
    if result.returncode not in (0, 5):
        sys.exit(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    if write:
        return json.loads(pathlib.Path(write).read_text())
    return json.loads((out / "report.json").read_text())


def drift(a, b, tol):
    """Largest early per-step and late window-mean differences of a against b."""
    early = {k: 0.0 for k in [*SCALARS, "expert_load"]}
    late = dict(early)
    steps_a, steps_b = a["steps"], b["steps"]
    e = tol["early_steps"]
    units = [(i, i + 1, early) for i in range(min(e, len(steps_b)))]
    units += [(i, min(i + tol["window"], len(steps_b)), late) for i in range(e, len(steps_b), tol["window"])]
    for lo, hi, into in units:
        for k in SCALARS:
            ma = sum(s[k] for s in steps_a[lo:hi]) / (hi - lo)
            mb = sum(s[k] for s in steps_b[lo:hi]) / (hi - lo)
            into[k] = max(into[k], abs(ma - mb) / max(abs(mb), 1e-6))
        for layer in range(len(steps_b[lo]["expert_load"])):
            la = [sum(x) for x in zip(*(s["expert_load"][layer] for s in steps_a[lo:hi]))]
            lb = [sum(x) for x in zip(*(s["expert_load"][layer] for s in steps_b[lo:hi]))]
            into["expert_load"] = max(into["expert_load"], max(abs(x - y) for x, y in zip(la, lb)) / sum(lb))
    return early, late


def first_failure(report):
    g = report["golden"]
    if g["passed"]:
        return "passes"
    return g["summary"].split(" [")[0].replace("golden check failed: ", "FAILS: ")[:150]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=os.environ.get("LATENTMOE_BUILD_DIR", str(REPO / "build")))
    parser.add_argument("--threads", default="1")
    parser.add_argument("--reference", type=int, default=2)
    parser.add_argument("--golden", nargs="*", default=sorted(str(p) for p in (REPO / "tests" / "golden").glob("*.json")))
    args = parser.parse_args()
    binary = pathlib.Path(args.build) / "latentmoe"
    ref_env = {"OMP_NUM_THREADS": str(args.reference)}
    for path in args.golden:
        golden = json.loads(pathlib.Path(path).read_text())
        lr = next(v for k, v in golden["config"].items() if k == "optimizer.lr")
        MUTATIONS["lr +10%"] = ({}, ["--set", f"optimizer.lr={float(lr) * 1.1}"])
        tol = golden["tolerance"]
        with tempfile.TemporaryDirectory() as tmp:
            work = pathlib.Path(tmp)
            reference = run(binary, golden, work, ref_env, write=work / "reference.json")
            again = run(binary, golden, work, ref_env, write=work / "again.json")
            same = drift(again, reference, tol)
            print(f"== {path}: {' '.join(golden['command'])}  ({len(golden['steps'])} steps, "
                  f"{golden['environment']['compute_dtype']}, reference {args.reference} threads)")
            print(f"   {args.reference} threads again: "
                  + ("bit-identical" if not any(v for d in same for v in d.values()) else f"DIFFERS {same}"))
            others = {}
            for t in [int(x) for x in args.threads.split(",") if int(x) != args.reference]:
                others[t] = drift(run(binary, golden, work, {"OMP_NUM_THREADS": str(t)}, write=work / f"t{t}.json"),
                                  reference, tol)
            print(f"   {'metric':<13}" + "".join(f"{f'{t} thr early':>14}{f'{t} thr late':>14}" for t in others)
                  + f"{'tol early':>11}{'tol late':>10}")
            for k in [*SCALARS, "expert_load"]:
                key = {"grad_norm": "grad_norm_rtol", "expert_load": "load_atol", "loss/balance": "aux_loss_rtol"}.get(k, "loss_rtol")
                print(f"   {k:<13}" + "".join(f"{d[0][k]:>14.2e}{d[1][k]:>14.2e}" for d in others.values())
                      + f"{tol['early'][key]:>11.1e}{tol['late'][key]:>10.1e}")
            print("   check in tolerance mode against the reference:")
            for t in others:
                report = run(binary, golden, work, {"OMP_NUM_THREADS": str(t)}, check=work / "reference.json")
                print(f"     {t} threads: {first_failure(report)}")
            for name, (env, extra) in MUTATIONS.items():
                report = run(binary, golden, work, {**ref_env, **env}, extra, check=work / "reference.json")
                print(f"     {name}: {first_failure(report)}")


if __name__ == "__main__":
    main()
