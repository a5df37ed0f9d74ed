"""Distributed training over torch's c10d Gloo backend, ranks launched as plain processes with the
torchrun environment on 127.0.0.1 (at most 4 ranks). Each layout is compared with one process
training the same global batch: data parallel (DP=2), expert parallel (EP=2), EP=2 x DP=2 on 4
ranks, ZeRO-1 on vs off, DP and EP x DP with ZeRO-1 through a batch-size ramp; sharded checkpoints saved at 2 ranks resume at 1 and at 4; bad launcher
environments fail before any rendezvous; a killed rank makes the others exit naming it, and the
committed checkpoints stay intact."""
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from test_training import SMALL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(binary, out: pathlib.Path, world: int, steps: int, *extra: str) -> list[subprocess.Popen]:
    # tools/gpu_check.sh reruns some of these over NCCL (LATENTMOE_TEST_BACKEND=nccl).
    backend = os.environ.get("LATENTMOE_TEST_BACKEND", "gloo")
    args = [str(binary), "train", *SMALL, "--set", f"train.steps={steps}", "--set", f"checkpoint.dir={out / 'ckpt'}",
            "--set", f"logging.dir={out / 'run'}", "--set", "parallel.timeout_s=20", "--set", f"parallel.backend={backend}",
            *extra]
    port = free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        if world > 1:
            env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=str(port))
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def run(binary, out: pathlib.Path, world: int, steps: int, *extra: str) -> list[str]:
    """Each rank's stderr (its log)."""
    procs = launch(binary, out, world, steps, *extra)
    errors = [p.communicate(timeout=600)[1] for p in procs]
    for rank, p in enumerate(procs):
        assert p.returncode == 0, f"rank {rank} of {world} exited {p.returncode}:\n{errors[rank][-4000:]}"
    return errors


def assert_shard_figures_match(binary, logs: list[str], *extra: str) -> None:
    """`config --shard` (the model built on the meta device) names the parameters and AdamW moment
    elements each rank of the run really allocated (its own log line)."""
    for rank, log in enumerate(logs):
        held, total, moments = map(int, re.search(r"this rank holds (\d+) of (\d+) parameters and (\d+) AdamW moment",
                                                  log).groups())
        shard = subprocess.run([str(binary), "config", *SMALL, *extra, "--world-size", str(len(logs)), "--rank",
                                str(rank), "--shard"], capture_output=True, text=True, check=True).stdout
        assert f"parameters           {held} of {total} " in shard, (rank, shard)
        assert f"AdamW moments        {moments} elements" in shard, (rank, shard)


def rows(out: pathlib.Path) -> list[dict]:
    return [json.loads(l) for l in (out / "run" / "metrics.jsonl").read_text().splitlines() if "loss/total" in l]


def losses(out: pathlib.Path) -> list[float]:
    return [r["loss/total"] for r in rows(out)]


def grad_norms(out: pathlib.Path) -> list[float]:
    return [r["grad_norm"] for r in rows(out)]


def assert_same_training(a: pathlib.Path, b: pathlib.Path, tol: float) -> None:
    """Losses AND gradient norms per step: AdamW is nearly blind to a wrong gradient scale, the
    norm is not."""
    assert max_rel(losses(a), losses(b)) <= tol
    assert max_rel(grad_norms(a), grad_norms(b)) <= tol


def max_rel(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b) and a, (a, b)
    return max(abs(x - y) / abs(x) for x, y in zip(a, b))


def checkpoint_tensors(step_dir: pathlib.Path, stem: str) -> dict:
    """Every tensor of a (single-file or sharded) checkpoint, by global name."""
    index = step_dir / f"{stem}.safetensors.index.json"
    if not index.exists():
        return load_file(step_dir / f"{stem}.safetensors")
    out = {}
    for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
        out.update(load_file(step_dir / shard))
    return out


def assert_same_tensors(a: dict, b: dict, tol: float) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        scale = max(1.0, float(np.abs(a[name]).max(initial=0)))
        assert np.abs(a[name].astype(np.float64) - b[name]).max(initial=0) <= tol * scale, name


def verify_committed(step_dir: pathlib.Path) -> None:
    """The checkpoint's own commit rule, re-implemented: marker = SHA-256 of the manifest, which
    lists the SHA-256 of every file."""
    manifest = (step_dir / "manifest.json").read_bytes()
    assert (step_dir / "COMMITTED").read_text().strip() == hashlib.sha256(manifest).hexdigest()
    for name, digest in json.loads(manifest)["files"].items():
        assert hashlib.sha256((step_dir / name).read_bytes()).hexdigest() == digest, name


def test_dp2_equals_one_process_with_accumulation(latentmoe_bin, tmp_path):
    run(latentmoe_bin, tmp_path / "one", 1, 10)  # global 4 = micro 2 x accumulation 2
    run(latentmoe_bin, tmp_path / "two", 2, 10)  # global 4 = 2 ranks x micro 2
    assert_same_training(tmp_path / "one", tmp_path / "two", 1e-5)
    step = "ckpt/step-00000010"
    assert (tmp_path / "two" / step / "model.safetensors.index.json").exists()  # one shard per rank
    assert_same_tensors(checkpoint_tensors(tmp_path / "one" / step, "model"),
                        checkpoint_tensors(tmp_path / "two" / step, "model"), 1e-6)
    assert all(r["dp/reduce_bytes"] > 0 for r in rows(tmp_path / "two"))


def test_fp8_dp2_equals_one_process_and_ep2_stays_within_the_quantization(latentmoe_bin, tmp_path):
    """precision.fp8=blockwise: every tile is a token's (1x128) or a micro-batch's (the weight
    gradient's 128-token tiles), so DP=2 equals one process accumulating the same micro-batches.
    Under EP=2 an expert's weight-gradient tiles span the tokens it receives from both ranks, which
    one process quantizes per micro-batch: equal to the quantization's error, not bit for bit."""
    fp8 = ("--set", "precision.fp8=blockwise", "--set", "precision.compute_dtype=bf16")
    run(latentmoe_bin, tmp_path / "one", 1, 6, *fp8)
    run(latentmoe_bin, tmp_path / "dp", 2, 6, *fp8)
    assert_same_training(tmp_path / "one", tmp_path / "dp", 1e-5)
    run(latentmoe_bin, tmp_path / "ep", 2, 6, *fp8, "--set", "parallel.ep=2")
    assert max_rel(losses(tmp_path / "one"), losses(tmp_path / "ep")) <= 1e-2
    assert any(k.startswith("fp8/model.layers.1.mlp.experts.") for k in rows(tmp_path / "ep")[0])


def ramp(start: int, increment: int) -> tuple[str, ...]:
    """A batch ramp to 8 sequences over the first 512 tokens (16 sequences of 32)."""
    return ("--set", "train.global_batch_size=8", "--set", "train.micro_batch_size=1",
            "--set", f"train.batch_ramp.start={start}", "--set", f"train.batch_ramp.increment={increment}",
            "--set", "train.batch_ramp.tokens=512")


def test_layouts_equal_one_process_through_a_batch_ramp(latentmoe_bin, tmp_path):
    # DP=2: 2, 4, 6, 8 sequences (one process accumulates 2 to 8 micro-batches, each rank 1 to 4).
    run(latentmoe_bin, tmp_path / "one", 1, 10, *ramp(2, 2))
    batches = [r["global_batch"] for r in rows(tmp_path / "one")]
    assert batches[0] == 2 and batches[-1] == 8 and set(batches) == {2, 4, 6, 8}, batches
    run(latentmoe_bin, tmp_path / "dp2", 2, 10, *ramp(2, 2))
    assert [r["global_batch"] for r in rows(tmp_path / "dp2")] == batches
    assert_same_training(tmp_path / "one", tmp_path / "dp2", 1e-5)
    # EP=2 x DP=2 with ZeRO-1 on 4 ranks: every ramp value splits over 4 ranks, so 4 then 8.
    run(latentmoe_bin, tmp_path / "one4", 1, 10, *ramp(4, 4))
    run(latentmoe_bin, tmp_path / "four", 4, 10, *ramp(4, 4), "--set", "parallel.ep=2", "--set", "parallel.zero_stage=1")
    assert {r["global_batch"] for r in rows(tmp_path / "four")} == {4, 8}
    assert_same_training(tmp_path / "one4", tmp_path / "four", 1e-5)
    step = "ckpt/step-00000010"
    assert_same_tensors(checkpoint_tensors(tmp_path / "one4" / step, "model"),
                        checkpoint_tensors(tmp_path / "four" / step, "model"), 1e-4)


def test_ep2_equals_one_process(latentmoe_bin, tmp_path):
    run(latentmoe_bin, tmp_path / "one", 1, 10)
    logs = run(latentmoe_bin, tmp_path / "ep", 2, 10, "--set", "parallel.ep=2")
    assert_same_training(tmp_path / "one", tmp_path / "ep", 1e-5)
    assert_shard_figures_match(latentmoe_bin, logs, "--set", "parallel.ep=2")
    assert all(r["ep/all_to_all_bytes"] > 0 for r in rows(tmp_path / "ep"))
    step = "ckpt/step-00000010"
    ep = checkpoint_tensors(tmp_path / "ep" / step, "model")
    assert_same_tensors(checkpoint_tensors(tmp_path / "one" / step, "model"), ep, 1e-4)
    # Each rank wrote only the experts it holds: experts 0-3 and 4-7 of a layer live in different shards.
    weight_map = json.loads((tmp_path / "ep" / step / "model.safetensors.index.json").read_text())["weight_map"]
    layer = "model.layers.1.mlp.experts.{}.up_proj.weight"
    assert weight_map[layer.format(0)] != weight_map[layer.format(7)]


def test_ep2_dp2_on_four_ranks_equals_one_process(latentmoe_bin, tmp_path):
    run(latentmoe_bin, tmp_path / "one", 1, 10)
    step = "ckpt/step-00000010"
    for zero in (0, 1):  # ZeRO-1 here also reduce-scatters expert buckets over 2-rank expert-DP groups
        four = tmp_path / f"four-zero{zero}"
        # Small buckets: many reductions launched from gradient hooks while backward runs.
        layout = ("--set", "parallel.ep=2", "--set", "train.micro_batch_size=1", "--set", "parallel.bucket_size_mb=0.01",
                  "--set", f"parallel.zero_stage={zero}")
        logs = run(latentmoe_bin, four, 4, 10, *layout)
        assert_same_training(tmp_path / "one", four, 1e-5)
        assert_shard_figures_match(latentmoe_bin, logs, *layout)
        for stem in ("model", "optimizer"):
            assert_same_tensors(checkpoint_tensors(tmp_path / "one" / step, stem), checkpoint_tensors(four / step, stem), 1e-4)


def test_zero1_matches_replicated_optimizer(latentmoe_bin, tmp_path):
    for zero in (0, 1):
        run(latentmoe_bin, tmp_path / f"zero{zero}", 2, 8, "--set", f"parallel.zero_stage={zero}",
            "--set", "parallel.bucket_size_mb=0.01")
    assert_same_training(tmp_path / "zero0", tmp_path / "zero1", 1e-6)
    step = "ckpt/step-00000008"
    for stem in ("model", "optimizer"):
        assert_same_tensors(checkpoint_tensors(tmp_path / "zero0" / step, stem),
                            checkpoint_tensors(tmp_path / "zero1" / step, stem), 1e-6)


def test_sharded_checkpoint_resumes_at_one_and_four_ranks(latentmoe_bin, tmp_path):
    common = ("--set", "checkpoint.interval=4", "--set", "parallel.zero_stage=1")
    straight = tmp_path / "straight"
    run(latentmoe_bin, straight, 2, 8, "--set", "parallel.ep=2", *common)
    saved = straight / "ckpt/step-00000004"
    verify_committed(saved)
    for name, world, extra in [("at1", 1, ()), ("at4", 4, ("--set", "parallel.ep=4", "--set", "train.micro_batch_size=1"))]:
        resumed = tmp_path / name
        (resumed / "ckpt").mkdir(parents=True)
        shutil.copytree(saved, resumed / "ckpt" / saved.name)
        run(latentmoe_bin, resumed, world, 8, "--resume", "auto", *common, *extra)
        assert max_rel(losses(straight)[4:], losses(resumed)) <= 1e-5, name
        assert max_rel(grad_norms(straight)[4:], grad_norms(resumed)) <= 1e-5, name


def test_bad_launcher_environment_fails_fast(latentmoe_bin, tmp_path):
    cases = [({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999"},
              "environment RANK=2 must be < WORLD_SIZE=2"),
             ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "29999"}, "MASTER_ADDR is not set"),
             ({"RANK": "0", "WORLD_SIZE": "two"}, "environment WORLD_SIZE='two' must be an integer >= 1")]
    for env, message in cases:
        start = time.time()
        result = subprocess.run([str(latentmoe_bin), "train", *SMALL], env={**os.environ, **env}, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 2, (env, result.stderr)
        assert message in result.stderr
        assert time.time() - start < 10
    for bad, message in [("parallel.ep=3", "parallel.ep (3) must divide the world size (2 ranks)"),
                         ("parallel.ep=0", "parallel.ep")]:
        result = subprocess.run([str(latentmoe_bin), "train", *SMALL, "--set", bad], capture_output=True, text=True,
                                env={**os.environ, "RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                                     "MASTER_PORT": "29999"}, timeout=60)
        assert result.returncode == 2 and message in result.stderr, result.stderr


@pytest.mark.parametrize("world,victim,extra", [(2, 1, ()), (4, 2, ("--set", "parallel.ep=2", "--set", "train.micro_batch_size=1"))])
def test_killed_rank_is_named_and_committed_checkpoints_survive(latentmoe_bin, tmp_path, world, victim, extra):
    ranks = launch(latentmoe_bin, tmp_path, world, 100000, "--set", "checkpoint.interval=1", "--set", "checkpoint.keep_last=3",
                   *extra)
    jsonl = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (jsonl.exists() and jsonl.read_text().count("\n") >= 3):
        time.sleep(0.2)
    ranks[victim].send_signal(signal.SIGKILL)
    start = time.time()
    for rank, p in enumerate(ranks):
        if rank == victim:
            continue
        code = p.wait(timeout=60)
        err = p.stderr.read()
        assert code != 0
        assert time.time() - start < 30
        # The survivor names itself, the collective and its group, and the lost rank (not a peer that
        # gave up after it), e.g. "rank 3 of 4: expert-parallel count exchange (group ep.1, 2 ranks)
        # failed: lost rank 2 (no heartbeat for 2 s); rank 1 stopped on an error of its own".
        pattern = rf"rank {rank} of {world}: \w[^:]* \(group [\w.]+, \d ranks\) failed: lost rank {victim} \(no heartbeat"
        assert re.search(pattern, err), err[-3000:]
    committed = [d for d in (tmp_path / "ckpt").iterdir() if (d / "COMMITTED").exists()]
    assert committed
    for d in committed:
        verify_committed(d)


def test_sigterm_on_one_rank_stops_every_rank_after_a_committed_checkpoint(latentmoe_bin, tmp_path):
    ranks = launch(latentmoe_bin, tmp_path, 2, 100000, "--set", "checkpoint.interval=0")
    jsonl = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (jsonl.exists() and jsonl.read_text().count("\n") >= 3):
        time.sleep(0.2)
    ranks[1].send_signal(signal.SIGTERM)  # only rank 1 is told; rank 0 learns it with the next step's scalars
    codes = [p.wait(timeout=60) for p in ranks]
    errors = [p.stderr.read() for p in ranks]
    assert codes == [3, 3], errors
    committed = [d for d in (tmp_path / "ckpt").iterdir() if (d / "COMMITTED").exists()]
    assert len(committed) == 1
    verify_committed(committed[0])
    assert int(committed[0].name.split("-")[1]) == len(rows(tmp_path))  # the last finished step
