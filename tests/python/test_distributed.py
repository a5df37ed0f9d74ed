"""Data parallel over torch's c10d Gloo backend, ranks launched as plain processes with the
torchrun environment on 127.0.0.1: DP=2 equals one process with gradient accumulation 2 (same
global batch) bit for bit; bad launcher environments fail before any rendezvous; a killed rank
makes the other exit non-zero in bounded time."""
import json
import os
import pathlib
import signal
import socket
import subprocess
import time

from test_training import SMALL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(binary, out: pathlib.Path, world: int, steps: int, port: int, *extra: str) -> list[subprocess.Popen]:
    args = [str(binary), "train", *SMALL, "--set", f"train.steps={steps}", "--set", f"checkpoint.dir={out / 'ckpt'}",
            "--set", f"logging.dir={out / 'run'}", "--set", "parallel.timeout_s=20", *extra]
    procs = []
    for rank in range(world):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        if world > 1:
            env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=str(port))
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def losses(out: pathlib.Path) -> list[float]:
    return [json.loads(l)["loss/total"] for l in (out / "run" / "metrics.jsonl").read_text().splitlines() if "loss/total" in l]


def test_dp2_equals_one_process_with_accumulation(latentmoe_bin, tmp_path):
    (single,) = launch(latentmoe_bin, tmp_path / "one", 1, 10, 0)  # global 4 = micro 2 x accumulation 2
    assert single.wait(timeout=300) == 0, single.stderr.read()
    ranks = launch(latentmoe_bin, tmp_path / "two", 2, 10, free_port())  # global 4 = 2 ranks x micro 2
    for p in ranks:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(a) == len(b) == 10
    assert max(abs(x - y) / abs(x) for x, y in zip(a, b)) <= 1e-5
    ckpt = "ckpt/step-00000010/model.safetensors"
    assert (tmp_path / "one" / ckpt).read_bytes() == (tmp_path / "two" / ckpt).read_bytes()


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
    result = subprocess.run([str(latentmoe_bin), "train", *SMALL, "--set", "parallel.ep=3"], capture_output=True, text=True,
                            env={**os.environ, "RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999"})
    assert result.returncode == 2 and "parallel.ep (3) must divide the world size (2 ranks)" in result.stderr


def test_killed_rank_makes_the_other_exit(latentmoe_bin, tmp_path):
    ranks = launch(latentmoe_bin, tmp_path, 2, 100000, free_port(), "--set", "checkpoint.interval=0")
    jsonl = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (jsonl.exists() and jsonl.read_text().count("\n") >= 2):
        time.sleep(0.2)
    ranks[1].send_signal(signal.SIGKILL)
    start = time.time()
    code = ranks[0].wait(timeout=60)
    err = ranks[0].stderr.read()
    assert code != 0
    assert time.time() - start < 30
    assert "rank 0 of 2" in err and "all-reduce failed" in err


def test_zero1_matches_replicated_optimizer_and_resumes_elsewhere(latentmoe_bin, tmp_path):
    runs = {}
    for zero in (0, 1):
        out = tmp_path / f"zero{zero}"
        for p in launch(latentmoe_bin, out, 2, 8, free_port(), "--set", f"parallel.zero_stage={zero}",
                        "--set", "checkpoint.interval=4"):
            assert p.wait(timeout=300) == 0, p.stderr.read()
        runs[zero] = out
    assert losses(runs[0]) == losses(runs[1])  # sharding the optimizer state changes no bit
    for name in ["model.safetensors", "optimizer.safetensors"]:
        assert (runs[0] / "ckpt/step-00000008" / name).read_bytes() == (runs[1] / "ckpt/step-00000008" / name).read_bytes()
    # The ZeRO-1 checkpoint holds the full optimizer state: resume it in ONE process at step 4.
    resumed = tmp_path / "resumed"
    (resumed / "ckpt").mkdir(parents=True)
    import shutil
    shutil.copytree(runs[1] / "ckpt/step-00000004", resumed / "ckpt/step-00000004")
    (single,) = launch(latentmoe_bin, resumed, 1, 8, 0, "--resume", "auto")
    assert single.wait(timeout=300) == 0, single.stderr.read()
    assert max(abs(a - b) / abs(a) for a, b in zip(losses(runs[1])[4:], losses(resumed))) <= 1e-5


def test_ep2_equals_one_process(latentmoe_bin, tmp_path):
    (single,) = launch(latentmoe_bin, tmp_path / "one", 1, 10, 0)
    assert single.wait(timeout=300) == 0, single.stderr.read()
    for p in launch(latentmoe_bin, tmp_path / "ep", 2, 10, free_port(), "--set", "parallel.ep=2"):
        assert p.wait(timeout=300) == 0, p.stderr.read()
    a, b = losses(tmp_path / "one"), losses(tmp_path / "ep")
    assert len(a) == len(b) == 10
    assert max(abs(x - y) / abs(x) for x, y in zip(a, b)) <= 1e-5
    rows = [json.loads(l) for l in (tmp_path / "ep" / "run" / "metrics.jsonl").read_text().splitlines() if "loss/total" in l]
    assert all(r["ep/all_to_all_bytes"] > 0 for r in rows)
