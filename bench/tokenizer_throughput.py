#!/usr/bin/env python3
"""Single-thread encode throughput: latentmoe's C++ tokenizer vs HF `tokenizers`, same files,
same tokenizer.json, same run; alternating, median of N repeats (after one warm-up each).

    python bench/tokenizer_throughput.py [--tokenizer T] [--repeats 5] [FILES/DIRS...]

Defaults: the bundled tokenizer on the default corpus. HF is pinned to one thread
(RAYON_NUM_THREADS=1, TOKENIZERS_PARALLELISM=false) and encodes document by document, as ours.
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import Tokenizer  # noqa: E402  (after the thread settings)

REPO = pathlib.Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", default=["/usr/share/doc/python3.11/html/_sources"])
    parser.add_argument("--tokenizer", default=str(REPO / "data/tokenizer/python-docs-bpe-8k.json"))
    parser.add_argument("--binary", default=str(REPO / "build/latentmoe"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    files = []
    for item in map(pathlib.Path, args.inputs):
        files += sorted(item.rglob("*.txt")) if item.is_dir() else [item]
    texts = [f.read_text(encoding="utf-8") for f in files]
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    hf = Tokenizer.from_file(args.tokenizer)

    def run_hf() -> float:
        start = time.perf_counter()
        for t in texts:
            hf.encode(t, add_special_tokens=False)
        return megabytes / (time.perf_counter() - start)

    def run_ours() -> float:
        out = subprocess.run([args.binary, "tokenize", "--tokenizer", args.tokenizer, "--bench", *map(str, files)],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout)["mb_per_s"]

    run_hf(), run_ours()  # warm-up (page cache, HF regex caches)
    ours, theirs = [], []
    for _ in range(args.repeats):
        ours.append(run_ours())
        theirs.append(run_hf())
    o, h = statistics.median(ours), statistics.median(theirs)
    print(f"{len(files)} files, {megabytes:.1f} MB, 1 thread, median of {args.repeats}")
    print(f"latentmoe  {o:8.2f} MB/s")
    print(f"HF tokenizers {h:8.2f} MB/s")
    print(f"ratio latentmoe / HF = {o / h:.2f}x")


if __name__ == "__main__":
    main()
