"""Step time and inter-host traffic of a two-host run (hosts as network namespaces joined by a veth
link, torchrun --nnodes 2 x 2 ranks, DP=4, one thread per rank) with the link unthrottled and
throttled by `tc ... tbf` to each --rate. Needs root (ip netns); run as root on a machine where
nothing else is running.

    python bench/multihost_link.py [--steps 30] [--rates 200mbit,20mbit]

The model is the test suite's small one (tests/python/test_training.py SMALL: 0.57M parameters,
2.3 MB of fp32 gradients per step), global batch 16 (4 micro-batches per rank).

Prints one JSON line per link setting: median step time after 5 warm-up steps, tokens/s, bytes each
rank reduced per step (`dp/reduce_bytes`), and the implied per-rank reduction bandwidth.
"""
import argparse
import json
import pathlib
import statistics
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "python"))
import test_multihost as mh  # noqa: E402  (the namespaces and the torchrun launch of the test suite)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rates", default="200mbit,20mbit")
    args = parser.parse_args()
    if (reason := mh.namespaces_unavailable()) is not None:
        sys.exit(f"cannot make hosts: {reason}")
    binary = REPO / "build" / "latentmoe"
    hosts = mh.Hosts()
    try:
        for rate in ["unthrottled", *args.rates.split(",")]:
            for i, name in enumerate(hosts.names):
                mh.sh("tc", "-n", name, "qdisc", "del", "dev", hosts.links[i], "root", check=False)
                if rate != "unthrottled":
                    mh.sh("tc", "-n", name, "qdisc", "add", "dev", hosts.links[i], "root", "tbf", "rate", rate,
                          "burst", "64kb", "latency", "400ms")
            with tempfile.TemporaryDirectory() as tmp:
                out = pathlib.Path(tmp)
                procs = mh.launch_hosts(hosts, binary, out, args.steps, "--set", "train.global_batch_size=16",
                                        "--set", "checkpoint.interval=0", "--set", "train.eval_interval=0",
                                        "--set", "schedule.warmup=5", "--set", "parallel.timeout_s=120")
                results = mh.finish(procs, timeout=1800)
                for code, output in results:
                    if code != 0:
                        sys.exit(f"link {rate}: a host failed:\n{output[-3000:]}")
                rows = mh.rows(out)
            steady = rows[5:]
            step = statistics.median(r["step_time_s"] for r in steady)
            reduced = statistics.median(r["dp/reduce_bytes"] for r in steady)
            print(json.dumps({"link": rate, "steps": len(rows), "median_step_s": round(step, 4),
                              "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in steady), 1),
                              "reduce_bytes_per_rank_step": int(reduced),
                              "reduce_MB_per_s_per_rank": round(reduced / step / 1e6, 2)}), flush=True)
    finally:
        for p in mh.LAUNCHED:
            mh.kill_group(p)
        hosts.close()


if __name__ == "__main__":
    main()
