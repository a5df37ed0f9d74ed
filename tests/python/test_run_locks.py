"""Two trainers never share a checkpoint.dir or logging.dir (issue 15, finding 1): the second
exits non-zero within seconds naming the first, the first's checkpoints hold only its own run, and
a killed holder leaves no stale lock."""
import json
import os
import pathlib
import signal
import subprocess
import time

from conftest import REPO

BINARY = pathlib.Path(os.environ.get("LATENTMOE_BUILD_DIR", REPO / "build")) / "latentmoe"
TINY = ["train", "--config", "tiny", "--set", "train.eval_batches=1", "--set", "checkpoint.interval=2"]


def start(tmp: pathlib.Path, *extra: str, ckpt="ckpt", log="log") -> subprocess.Popen:
    return subprocess.Popen([str(BINARY), *TINY, "--set", f"checkpoint.dir={tmp / ckpt}", "--set", f"logging.dir={tmp / log}",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def wait_for_lock(path: pathlib.Path, timeout=30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().startswith("pid "):
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} never named its holder")


def test_second_trainer_on_one_checkpoint_dir_is_refused_ten_times(tmp_path):
    for attempt in range(10):
        run = tmp_path / f"try{attempt}"
        first = start(run, "--set", "seed=1")
        try:
            holder = wait_for_lock(run / "ckpt" / ".latentmoe.lock")
            began = time.monotonic()
            second = subprocess.run([str(BINARY), *TINY, "--set", f"checkpoint.dir={run / 'ckpt'}",
                                     "--set", f"logging.dir={run / 'log2'}", "--set", "seed=2"],
                                    capture_output=True, text=True, timeout=60, cwd=REPO)
            elapsed = time.monotonic() - began
            assert second.returncode == 1, second.stderr
            assert elapsed < 5, elapsed
            assert f"pid {first.pid} on host" in second.stderr and "checkpoint.dir" in second.stderr, second.stderr
            assert holder.startswith(f"pid {first.pid} ")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        # Whatever the first run committed is its own: config seed 1, never the second run's.
        for committed in (run / "ckpt").glob("step-*/COMMITTED"):
            assert "seed: 1 " in (committed.parent / "config.yaml").read_text()
        assert not (run / "log2" / "metrics.jsonl").exists()


def test_shared_logging_dir_is_refused_and_a_killed_holder_leaves_no_stale_lock(tmp_path):
    first = start(tmp_path, ckpt="a")
    try:
        wait_for_lock(tmp_path / "log" / ".latentmoe.lock")
        second = subprocess.run([str(BINARY), *TINY, "--set", f"checkpoint.dir={tmp_path / 'b'}",
                                 "--set", f"logging.dir={tmp_path / 'log'}"], capture_output=True, text=True, timeout=60)
        assert second.returncode == 1 and "logging.dir" in second.stderr and f"pid {first.pid}" in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The kernel dropped the dead holder's lock: the same directories train again at once.
    again = subprocess.run([str(BINARY), *TINY, "--set", "train.steps=2", "--set", "schedule.warmup=1",
                            "--set", f"checkpoint.dir={tmp_path / 'a'}", "--set", f"logging.dir={tmp_path / 'log'}"],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    rows = [json.loads(l) for l in (tmp_path / "log" / "metrics.jsonl").read_text().splitlines()]
    assert rows


def test_unwritable_checkpoint_dir_is_found_before_step_one(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = subprocess.run([str(BINARY), *TINY, "--set", f"checkpoint.dir={blocker / 'ckpt'}",
                             "--set", f"logging.dir={tmp_path / 'log'}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"checkpoint.dir {blocker / 'ckpt'}: cannot create the directory" in result.stderr
    assert "step 1/" not in result.stderr
