"""Telling a bad step from a bad machine (issue 15): train.spike_action=rerun re-executes a spiking
step from the same state and tells a fault that reproduces (the data or the model: logged with its
samples, update skipped) from one that does not (the machine: stops naming the rank, exit 7), on
one and on two ranks; train.replica_check_interval compares every replica bit for bit and stops
before a checkpoint captures a divergence. Faults are injected by test hooks:
LATENTMOE_TEST_SPIKE=STEP:RANK:once|always blows up one rank's loss (and so its gradients) on the
first execution of STEP only or on every execution; LATENTMOE_TEST_CORRUPT_REPLICA=STEP:RANK
changes one parameter element of one rank after STEP's update."""
import pathlib
import re

import pytest

from test_distributed import launch

SPIKE = ["--set", "train.spike_zscore=3", "--set", "train.spike_window=4", "--set", "train.grad_clip_norm=0"]


def run_ranks(binary, out: pathlib.Path, world: int, steps: int, *extra: str) -> list[tuple[int, str]]:
    procs = launch(binary, out, world, steps, *extra)
    results = []
    for p in procs:
        _, err = p.communicate(timeout=600)
        results.append((p.returncode, err))
    return results


@pytest.mark.parametrize("world", [1, 2])
def test_a_fault_that_does_not_reproduce_is_the_machine_and_names_the_rank(latentmoe_bin, tmp_path, monkeypatch, world):
    faulty = world - 1
    monkeypatch.setenv("LATENTMOE_TEST_SPIKE", f"7:{faulty}:once")
    results = run_ranks(latentmoe_bin, tmp_path, world, 9, *SPIKE, "--set", "train.spike_action=rerun",
                        "--set", "checkpoint.interval=5")
    for rank, (code, err) in enumerate(results):
        assert code == 7, f"rank {rank} exited {code}:\n{err[-3000:]}"
        assert re.search(rf"did not reproduce on rerun .* machine on rank {faulty} \(whose own", err), err[-3000:]
    assert f"this is rank {faulty} on host" in results[faulty][1]
    # Stopped before the update of step 7: only the step-5 checkpoint exists.
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("step-*")) == ["step-00000005"]


@pytest.mark.parametrize("world", [1, 2])
def test_a_spike_that_reproduces_is_the_data_and_is_skipped_with_its_samples(latentmoe_bin, tmp_path, monkeypatch, world):
    monkeypatch.setenv("LATENTMOE_TEST_SPIKE", f"7:{world - 1}:always")
    results = run_ranks(latentmoe_bin, tmp_path, world, 9, *SPIKE, "--set", "train.spike_action=rerun")
    for rank, (code, err) in enumerate(results):
        assert code == 0, f"rank {rank} exited {code}:\n{err[-3000:]}"
        assert "loss spike at step 7 reproduced bit for bit on rerun: caused by the data or the model" in err
        # Step 7 trains global samples [24, 28) (4 per step); each is traced to its dataset.
        assert re.search(r"global samples \[24, 28\): 24 = \S+python-docs sample \d+ \(tokens \[\d+, \d+\)", err), err
        assert "update skipped" in err
    assert "did not reproduce" not in results[0][1]


def test_without_faults_rerun_and_replica_checks_change_nothing(latentmoe_bin, tmp_path):
    plain, checked = tmp_path / "plain", tmp_path / "checked"
    for code, err in run_ranks(latentmoe_bin, plain, 2, 6):
        assert code == 0, err[-3000:]
    for code, err in run_ranks(latentmoe_bin, checked, 2, 6, "--set", "train.spike_action=rerun",
                               "--set", "train.replica_check_interval=1"):
        assert code == 0, err[-3000:]
        assert "replica check" not in err
    read = lambda d: [l for l in (d / "run" / "metrics.jsonl").read_text().splitlines() if "loss/total" in l]
    strip = lambda rows: [re.sub(r'"(time|tokens_per_s|step_time_s|tflops|mfu)":[^,}]+', "", r) for r in rows]
    assert strip(read(plain)) == strip(read(checked))


def test_two_replicas_that_diverge_stop_before_the_checkpoint(latentmoe_bin, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTMOE_TEST_CORRUPT_REPLICA", "3:1")
    results = run_ranks(latentmoe_bin, tmp_path, 2, 6, "--set", "train.replica_check_interval=2",
                        "--set", "checkpoint.interval=3")
    for rank, (code, err) in enumerate(results):
        assert code == 7, f"rank {rank} exited {code}:\n{err[-3000:]}"
        # Two copies: no majority, so both ranks are named and the message says why.
        assert re.search(r"replica check after step 3: the replicated parameters and their AdamW moments differ "
                         r"between ranks 0, 1, and no copy is held by a majority", err), err[-3000:]
    assert not list((tmp_path / "ckpt").glob("step-*"))  # the step-3 save never happened


def test_a_majority_names_the_diverging_rank(latentmoe_bin, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTMOE_TEST_CORRUPT_REPLICA", "2:2")
    results = run_ranks(latentmoe_bin, tmp_path, 4, 4, "--set", "train.micro_batch_size=1",
                        "--set", "train.replica_check_interval=2", "--set", "parallel.zero_stage=1")
    for rank, (code, err) in enumerate(results):
        assert code == 7, f"rank {rank} exited {code}:\n{err[-3000:]}"
        assert re.search(r"replica check after step 2: the replicated parameters on rank 2 differ from the copy most "
                         r"ranks hold \(rank 0's\)", err), err[-3000:]


def test_spike_action_stop_exits_6_and_replica_check_on_one_process_warns(run_cli, tmp_path, monkeypatch):
    from test_training import train
    monkeypatch.setenv("LATENTMOE_TEST_SPIKE", "7:0:always")
    r = train(run_cli, tmp_path, 9, *SPIKE, "--set", "train.spike_action=stop", "--set", "train.replica_check_interval=2")
    assert r.returncode == 6, r.stderr[-3000:]
    assert "loss spike at step 7" in r.stderr and "train.spike_action=stop" in r.stderr
    assert "a single process holds no replicas" in r.stderr
    bad = run_cli("config", "--set", "train.spike_action=stop", "--summary")
    assert bad.returncode == 2 and "train.spike_action=stop needs train.spike_zscore > 0" in bad.stderr
