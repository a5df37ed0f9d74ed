"""Training end to end through the CLI: TensorBoard files read back by the `tensorboard`
package, bit-exact resume in a fresh process, a crash between writing and the commit marker,
and a corrupted checkpoint."""
import json
import pathlib
import subprocess

import pytest

from conftest import REPO

SMALL = ["--set", "model.hidden_size=32", "--set", "model.intermediate_size=64", "--set", "model.ffn.moe_intermediate_size=16",
         "--set", "model.num_hidden_layers=2", "--set", "model.num_attention_heads=2", "--set", "model.attention.q_lora_rank=16",
         "--set", "model.attention.kv_lora_rank=16", "--set", "model.attention.qk_nope_head_dim=8", "--set", "model.attention.qk_rope_head_dim=4",
         "--set", "model.attention.v_head_dim=8", "--set", "train.seq_len=32", "--set", "train.global_batch_size=4",
         "--set", "train.micro_batch_size=2", "--set", "train.eval_interval=0", "--set", "train.eval_batches=1",
         "--set", "schedule.warmup=2", "--set", "logging.interval=1"]


def train(run_cli, tmp_path: pathlib.Path, steps: int, *extra: str, env=None):
    args = ["train", *SMALL, "--set", f"train.steps={steps}", "--set", f"checkpoint.dir={tmp_path / 'ckpt'}",
            "--set", f"logging.dir={tmp_path / 'run'}", *extra]
    if env is None:
        return run_cli(*args)
    import os
    from conftest import REPO as _  # noqa: F401
    binary = pathlib.Path(os.environ.get("LATENTMOE_BUILD_DIR", REPO / "build")) / "latentmoe"
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=600, env={**os.environ, **env})


def metrics(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in (path / "run" / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_files_read_back(run_cli, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    result = train(run_cli, tmp_path, 4)
    assert result.returncode == 0, result.stderr
    acc = EventAccumulator(str(tmp_path / "run"))
    acc.Reload()
    rows = [r for r in metrics(tmp_path) if "loss/total" in r]
    assert len(rows) == 4
    for tag in ["loss/total", "loss/lm", "loss/mtp", "grad_norm", "lr", "tokens_per_s", "moe/layer0/max_violation"]:
        assert tag in acc.Tags()["scalars"], tag
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [r["step"] for r in rows]
        for e, r in zip(events, rows):
            assert e.value == pytest.approx(r[tag], rel=1e-6, abs=1e-30)  # float32 in the event file


def test_resume_in_a_fresh_process_is_bit_exact(run_cli, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train(run_cli, straight, 20).returncode == 0
    first = train(run_cli, split, 20, "--set", "checkpoint.interval=10", env={"LATENTMOE_TEST_STOP_AFTER_STEP": "10"})
    assert first.returncode == 3, first.stderr  # stopped like a SIGTERM: checkpoint committed, exit 3
    resumed = train(run_cli, split, 20, "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr and "step-00000010" in resumed.stderr
    a = [r["loss/total"] for r in metrics(straight) if "loss/total" in r]
    b = [r["loss/total"] for r in metrics(split) if "loss/total" in r]
    assert len(a) == 20 and len(b) == 20
    assert a[10:] == b[10:]  # exact float equality: JSONL holds round-trip doubles
    final_a = (straight / "ckpt" / "step-00000020" / "model.safetensors").read_bytes()
    final_b = (split / "ckpt" / "step-00000020" / "model.safetensors").read_bytes()
    assert final_a == final_b


def test_crash_before_commit_marker_is_skipped(run_cli, tmp_path):
    crashed = train(run_cli, tmp_path, 3, "--set", "checkpoint.interval=3", env={"LATENTMOE_TEST_CRASH_BEFORE_COMMIT": "1"})
    assert crashed.returncode == 86
    partial = tmp_path / "ckpt" / "step-00000003"
    assert partial.exists() and not (partial / "COMMITTED").exists()
    again = train(run_cli, tmp_path, 3, "--resume", "auto")
    assert again.returncode == 0, again.stderr
    assert "skipped" in again.stderr and "step-00000003: no COMMITTED marker" in again.stderr
    assert "starting from scratch" in again.stderr
    assert (partial / "COMMITTED").exists()


def test_flipped_byte_fails_integrity_naming_the_file(run_cli, tmp_path):
    assert train(run_cli, tmp_path, 2).returncode == 0
    target = tmp_path / "ckpt" / "step-00000002" / "optimizer.safetensors"
    data = bytearray(target.read_bytes())
    data[-5] ^= 0x01
    target.write_bytes(bytes(data))
    result = train(run_cli, tmp_path, 4, "--resume", str(tmp_path / "ckpt" / "step-00000002"))
    assert result.returncode == 1
    assert "step-00000002/optimizer.safetensors: SHA-256 mismatch" in result.stderr


def test_nan_injection_exits_nonzero_before_the_update(run_cli, tmp_path):
    result = train(run_cli, tmp_path, 5, env={"LATENTMOE_TEST_NAN_AT_STEP": "3"})
    assert result.returncode == 4
    assert "non-finite loss at step 3" in result.stderr and "stopped before the optimizer update" in result.stderr


def test_sigterm_finishes_the_step_saves_and_exits_3(latentmoe_bin, tmp_path):
    import signal
    import time
    args = [str(latentmoe_bin), "train", *SMALL, "--set", "train.steps=100000", "--set", f"checkpoint.dir={tmp_path / 'ckpt'}",
            "--set", "checkpoint.interval=0", "--set", f"logging.dir={tmp_path / 'run'}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    jsonl = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (jsonl.exists() and jsonl.read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "received signal 15" in err
    committed = sorted((tmp_path / "ckpt").glob("step-*/COMMITTED"))
    assert len(committed) == 1


def test_eval_command_and_bf16_training(run_cli, tmp_path):
    result = train(run_cli, tmp_path, 6, "--set", "precision.compute_dtype=bf16", "--set", "optimizer.lr=1e-2")
    assert result.returncode == 0, result.stderr
    losses = [r["loss/lm"] for r in metrics(tmp_path) if "loss/lm" in r]
    assert len(losses) == 6 and all(l == l for l in losses) and losses[-1] < losses[0]
    from safetensors.torch import load_file
    weights = load_file(tmp_path / "ckpt" / "step-00000006" / "model.safetensors")
    assert all(str(t.dtype) == "torch.float32" for t in weights.values())  # fp32 master weights
    result = run_cli("eval", *SMALL, "--set", "precision.compute_dtype=bf16", "--checkpoint",
                     str(tmp_path / "ckpt" / "step-00000006"))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["step"] == 6 and report["valid_loss"] > 0 and report["unigram_entropy"] > 0


def test_resuming_with_another_data_stream_warns(run_cli, tmp_path):
    assert train(run_cli, tmp_path, 4, "--set", "checkpoint.interval=2").returncode == 0
    resumed = train(run_cli, tmp_path, 6, "--resume", "auto", "--set", "train.seq_len=16")
    assert resumed.returncode == 0, resumed.stderr
    assert "resume: train.seq_len is 32 in" in resumed.stderr and "but 16 now" in resumed.stderr
    same = train(run_cli, tmp_path, 8, "--resume", "auto", "--set", "train.seq_len=16")
    assert same.returncode == 0 and "resume: " not in same.stderr.replace("resume: skipped", "")


def test_a_failed_save_leaves_no_temporary_directory(run_cli, tmp_path):
    """Disk full, as a file size limit: writing the weights fails with EFBIG (SIGXFSZ ignored)."""
    assert train(run_cli, tmp_path, 2).returncode == 0  # one committed checkpoint; the corpus is prepared
    import os
    binary = pathlib.Path(os.environ.get("LATENTMOE_BUILD_DIR", REPO / "build")) / "latentmoe"
    args = " ".join(["train", *SMALL, "--set", "train.steps=4", "--set", "checkpoint.interval=4",
                     "--set", f"checkpoint.dir={tmp_path / 'ckpt'}", "--set", f"logging.dir={tmp_path / 'run'}",
                     "--resume", "auto"])
    limited = subprocess.run(["bash", "-c", f"trap '' XFSZ; ulimit -f 64; exec {binary} {args}"], capture_output=True,
                             text=True, timeout=300)
    assert limited.returncode == 1, limited.stderr[-2000:]
    ckpt = tmp_path / "ckpt"
    assert not list(ckpt.glob(".step-*.tmp")), sorted(p.name for p in ckpt.iterdir())
    assert sorted(p.name for p in ckpt.glob("step-*")) == ["step-00000002"]
    assert (ckpt / "step-00000002" / "COMMITTED").exists()


def fim_tokenizer(tmp_path: pathlib.Path) -> pathlib.Path:
    """The bundled tokenizer plus StarCoder-style FIM tokens at ids 8192..8195."""
    j = json.loads((REPO / "data" / "tokenizer" / "python-docs-bpe-8k.json").read_text())
    for i, name in enumerate(["<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"]):
        j["added_tokens"].append({"id": 8192 + i, "content": name, "single_word": False, "lstrip": False,
                                  "rstrip": False, "normalized": False, "special": True})
    path = tmp_path / "fim-tokenizer.json"
    path.write_text(json.dumps(j))
    return path


def test_fim_changes_training_and_needs_fim_tokens(run_cli, tmp_path):
    # data.fim_rate used to be accepted and ignored (a run trained byte-identically without it).
    tokenizer = fim_tokenizer(tmp_path)
    common = ["--set", f"data.tokenizer={tokenizer}", "--set", "model.vocab_size=8196"]
    plain = train(run_cli, tmp_path / "plain", 3, *common)
    fim = train(run_cli, tmp_path / "fim", 3, *common, "--set", "data.fim_rate=0.5")
    assert plain.returncode == 0 and fim.returncode == 0, fim.stderr[-3000:]
    plain_losses = [r["loss/lm"] for r in metrics(tmp_path / "plain") if "loss/lm" in r]
    fim_losses = [r["loss/lm"] for r in metrics(tmp_path / "fim") if "loss/lm" in r]
    assert len(plain_losses) == len(fim_losses) == 3 and plain_losses != fim_losses
    again = train(run_cli, tmp_path / "again", 3, *common, "--set", "data.fim_rate=0.5")
    assert again.returncode == 0
    assert fim_losses == [r["loss/lm"] for r in metrics(tmp_path / "again") if "loss/lm" in r]  # keyed draws
    missing = train(run_cli, tmp_path / "missing", 3, "--set", "data.fim_rate=0.1")
    assert missing.returncode == 2, missing.stderr[-2000:]
    assert "needs the FIM special tokens" in missing.stderr and "<fim_prefix>" in missing.stderr
    small = train(run_cli, tmp_path / "small", 3, "--set", f"data.tokenizer={tokenizer}", "--set", "data.fim_rate=0.1")
    assert small.returncode == 2 and "raise model.vocab_size" in small.stderr, small.stderr[-2000:]


def test_background_batch_workers_train_bit_identically(run_cli, tmp_path):
    # data.num_workers used to be accepted and ignored; now it is the number of preparing threads.
    runs = {}
    for workers in (0, 3):
        r = train(run_cli, tmp_path / f"w{workers}", 4, "--set", f"data.num_workers={workers}",
                  "--set", "train.micro_batch_size=1")
        assert r.returncode == 0, r.stderr[-2000:]
        runs[workers] = [(m["loss/total"], m["grad_norm"]) for m in metrics(tmp_path / f"w{workers}") if "grad_norm" in m]
    assert len(runs[0]) == 4 and runs[0] == runs[3]


def test_concurrent_first_runs_prepare_the_default_corpus_once(latentmoe_bin, tmp_path):
    # On a fresh machine two runs (ranks, or tests in parallel) both prepared the corpus into the
    # same files and one died: "cannot rename: ... python-docs.bin.tmp".
    import os
    env = {**os.environ, "LATENTMOE_DATA_DIR": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([str(latentmoe_bin), "train", *SMALL, "--set", "train.steps=1", "--set", "schedule.warmup=0",
                               "--set", f"checkpoint.dir={tmp_path / n / 'c'}", "--set", f"logging.dir={tmp_path / n / 'l'}"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in ("a", "b")]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert sum("preparing the default corpus" in e for e in errors) == 1, errors
