"""The compressed DeepSeek-V3 recipe through the CLI (configs/recipe-cpu*.yaml, shortened 4x here;
`make recipe-cpu` runs it whole): every switch of stage 1 fires at its token count in the metrics,
the extension stages start from the previous stage's checkpoint with a lineage, `convert --to-hf`
writes the last stage's rope_scaling, the timeline prints and plots, and bad stage input is refused
naming the key without touching the source run."""
import hashlib
import json
import pathlib

import pytest

# Stage 1's boundaries at a quarter of configs/recipe-cpu.yaml's token counts (the step-down a little earlier,
# so that it still gets a few steps).
SHORT = {"train.tokens": 102400, "train.batch_ramp.tokens": 10240, "train.mtp_loss_weight_switch_tokens": 69120,
         "schedule.decay_start": 69120, "schedule.decay_length": 29696, "train.bias_update_freeze_tokens": 98816,
         "schedule.stepdown_at": "[99840]", "schedule.warmup": 5}


def sets(values: dict) -> list[str]:
    return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


def stage(tmp_path: pathlib.Path, name: str) -> list[str]:
    return sets({"checkpoint.dir": tmp_path / name / "ckpt", "logging.dir": tmp_path / name / "run"})


def rows(run_dir: pathlib.Path) -> list[dict]:
    return [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if "loss/total" in l]


def final_checkpoint(ckpt: pathlib.Path) -> pathlib.Path:
    return sorted(ckpt.glob("step-*"))[-1]


def hashes(root: pathlib.Path) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def recipe(latentmoe_bin, tmp_path_factory):
    """Runs the three stages once for the tests below."""
    import subprocess

    tmp = tmp_path_factory.mktemp("recipe")

    def cli(*args):
        r = subprocess.run([str(latentmoe_bin), *args], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-4000:]
        return r

    cli("train", "--config", "recipe-cpu", *sets(SHORT), *stage(tmp, "s1"))
    s1 = final_checkpoint(tmp / "s1" / "ckpt")
    s2_log = cli("train", "--config", "recipe-cpu-ext-4x", "--set", "train.steps=6", *stage(tmp, "s2"), "--init-from", str(s1))
    s2 = final_checkpoint(tmp / "s2" / "ckpt")
    cli("train", "--config", "recipe-cpu-ext-8x", "--set", "train.steps=6", *stage(tmp, "s3"), "--init-from", str(s2))
    return {"dir": tmp, "s1": s1, "s2": s2, "s3": final_checkpoint(tmp / "s3" / "ckpt"), "s2_log": s2_log.stderr}


def test_every_stage1_switch_fires_at_its_token_count(recipe):
    r = rows(recipe["dir"] / "s1" / "run")
    seen = {"ramp": set(), "lambda": set(), "gamma": set(), "lr_step": set()}
    for row in r:
        before = row["tokens_seen"] - row["global_batch"] * 64  # the switches look at the tokens before the step
        batch = 32 if before >= 10240 else min(32, 8 + (before * 3 // 10240) * 8)
        assert row["global_batch"] == batch, row
        assert row["mtp_lambda"] == (0.1 if before >= 69120 else 0.3), row
        assert row["bias_update_speed"] == (0.0 if before >= 98816 else 0.01), row
        if before >= 99840:
            assert row["lr"] == pytest.approx(1e-4, rel=1e-12), row
        seen["ramp"].add(row["global_batch"])
        seen["lambda"].add(row["mtp_lambda"])
        seen["gamma"].add(row["bias_update_speed"])
        seen["lr_step"].add(before >= 99840)
    assert seen["ramp"] == {8, 16, 24, 32} and seen["lambda"] == {0.3, 0.1}
    assert seen["gamma"] == {0.01, 0.0} and seen["lr_step"] == {False, True}
    assert r[-1]["tokens_seen"] >= 102400 > r[-2]["tokens_seen"]  # sized in tokens: stops at the first step past them


def test_extension_stages_record_their_lineage(recipe):
    assert "new stage 'recipe-cpu-ext-4x' from" in recipe["s2_log"] and "AdamW state carried" in recipe["s2_log"]
    assert "train.seq_len 64 -> 256" in recipe["s2_log"]
    state = json.loads((recipe["s3"] / "trainer_state.json").read_text())
    lineage = state["lineage"]
    assert [entry["stage"] for entry in lineage] == ["recipe-cpu", "recipe-cpu-ext-4x"]
    assert lineage[0]["checkpoint"] == str(recipe["s1"].resolve())
    assert lineage[1]["checkpoint"] == str(recipe["s2"].resolve())
    for entry, ckpt in zip(lineage, (recipe["s1"], recipe["s2"])):
        assert entry["config_sha256"] == hashlib.sha256((ckpt / "config.yaml").read_bytes()).hexdigest()
        assert entry["manifest_sha256"] == hashlib.sha256((ckpt / "manifest.json").read_bytes()).hexdigest()
    assert state["stage"]["name"] == "recipe-cpu-ext-8x"
    assert [r["global_batch"] for r in rows(recipe["dir"] / "s3" / "run")] == [4] * 6


def test_convert_of_the_last_stage_writes_its_rope_scaling(recipe, run_cli, tmp_path):
    out = tmp_path / "hf"
    result = run_cli("convert", "--checkpoint", str(recipe["s3"]), "--to-hf", str(out))
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["rope_scaling"]["type"] == "yarn" and config["rope_scaling"]["factor"] == 8.0
    assert config["rope_scaling"]["original_max_position_embeddings"] == 64
    assert config["max_position_embeddings"] == 512


def test_eval_scores_a_stage_at_another_length(recipe, run_cli):
    result = run_cli("eval", "--config", "recipe-cpu-ext-8x", "--checkpoint", str(recipe["s1"]))
    assert result.returncode == 0, result.stderr
    scored = json.loads(result.stdout)
    assert scored["seq_len"] == 512 and scored["step"] == int(recipe["s1"].name.removeprefix("step-"))


def test_bad_stage_input_is_refused_and_the_source_run_is_untouched(recipe, run_cli, tmp_path):
    before = hashes(recipe["dir"] / "s1")
    other = run_cli("train", "--config", "recipe-cpu-ext-4x", "--set", "model.hidden_size=64", "--set", "train.steps=1",
                    *stage(tmp_path, "other"), "--init-from", str(recipe["s1"]))
    assert other.returncode == 2, other.stderr
    assert "another architecture" in other.stderr and "model.hidden_size (128 in the checkpoint, 64 in the config)" in other.stderr
    missing = run_cli("train", "--config", "recipe-cpu-ext-4x", "--set", "train.steps=1", *stage(tmp_path, "missing"),
                      "--init-from", str(recipe["s1"].parent / "step-99999999"))
    assert missing.returncode != 0 and "step-99999999" in missing.stderr
    own = run_cli("train", "--config", "recipe-cpu-ext-4x", "--set", "train.steps=1",
                  "--set", f"checkpoint.dir={recipe['s1'].parent}", "--set", f"logging.dir={tmp_path / 'own'}",
                  "--init-from", str(recipe["s1"]))
    assert own.returncode == 2 and "give the new stage its own checkpoint.dir" in own.stderr
    both_file = tmp_path / "both.yaml"
    both_file.write_text("name: both\ntrain:\n  steps: 3\n  tokens: 4096\n")
    both = run_cli("train", "--config", str(both_file))
    assert both.returncode == 2
    assert "exactly one of train.steps and train.tokens must be > 0" in both.stderr and "train.steps=3" in both.stderr
    later = run_cli("config", "--config", "recipe-cpu", "--set", "train.tokens=4096", "--set", "train.steps=300", "--dump")
    assert later.returncode == 0 and "  steps: 300" in later.stdout and "  tokens: 0" in later.stdout  # the later one wins
    ramp = run_cli("config", "--config", "recipe-cpu", "--set", "train.batch_ramp.increment=12", "--world-size", "1")
    assert ramp.returncode == 2
    assert "the global batch 20 (start 8 + 1 x increment 12) is not divisible by train.micro_batch_size (8)" in ramp.stderr
    assert hashes(recipe["dir"] / "s1") == before


def test_timeline_prints_and_plots_the_recipe(run_cli, tmp_path):
    png = tmp_path / "timeline.png"
    result = run_cli("config", "--config", "recipe-cpu", "--stage", "recipe-cpu-ext-4x", "--stage", "recipe-cpu-ext-8x",
                     "--timeline", "--png", str(png))
    assert result.returncode == 0, result.stderr
    assert "stage 1 'recipe-cpu': 230 steps" in result.stdout
    assert "yarn x8 from 64" in result.stdout and "cosine decay" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(png.with_suffix(".png.json").read_text())
    assert data["stages"] == ["recipe-cpu", "recipe-cpu-ext-4x", "recipe-cpu-ext-8x"]


def test_a_run_stopped_mid_ramp_resumes_bit_identically(run_cli, tmp_path):
    import os
    import subprocess

    from test_training import SMALL

    binary = pathlib.Path(os.environ.get("LATENTMOE_BUILD_DIR", pathlib.Path(__file__).parents[2] / "build")) / "latentmoe"
    ramp = ["--set", "train.global_batch_size=8", "--set", "train.micro_batch_size=2", "--set", "train.batch_ramp.start=2",
            "--set", "train.batch_ramp.increment=2", "--set", "train.batch_ramp.tokens=640", "--set", "train.tokens=2560"]

    def train(out, *extra, env=None):
        args = [str(binary), "train", *SMALL, *ramp, "--set", f"checkpoint.dir={out / 'ckpt'}",
                "--set", f"logging.dir={out / 'run'}", *extra]
        return subprocess.run(args, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})

    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train(straight).returncode == 0
    batches = [r["global_batch"] for r in rows(straight / "run")]
    stop = batches.index(4) + 1  # stopped (like a SIGTERM) after the first step of batch 4: inside the ramp and inside
    assert batches[stop - 1] == batches[stop] == 4  # one of its constant-batch segments
    first = train(split, env={"LATENTMOE_TEST_STOP_AFTER_STEP": str(stop)})
    assert first.returncode == 3, first.stderr
    resumed = train(split, "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    a, b = rows(straight / "run"), rows(split / "run")
    assert [r["global_batch"] for r in b] == batches
    assert [r["loss/total"] for r in a] == [r["loss/total"] for r in b]
    last = final_checkpoint(straight / "ckpt").name
    assert (straight / "ckpt" / last / "model.safetensors").read_bytes() == (split / "ckpt" / last / "model.safetensors").read_bytes()
