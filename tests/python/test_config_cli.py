"""The config CLI seen from outside: dumps are valid YAML that independent parsers agree with,
and a JSON rendering of a dump loads to the same config."""
import json
import re

import pytest
import yaml

from conftest import REPO

PRESETS = sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_dump_is_yaml_and_json_twin_loads_identically(preset, run_cli, tmp_path):
    dumped = run_cli("config", "--config", preset, "--dump")
    assert dumped.returncode == 0, dumped.stderr
    as_dict = yaml.safe_load(dumped.stdout)
    assert as_dict["name"] == preset
    json_file = tmp_path / f"{preset}.json"
    json_file.write_text(json.dumps(as_dict, indent=2))
    again = run_cli("config", "--config", str(json_file), "--dump")
    assert again.returncode == 0, again.stderr
    assert again.stdout == dumped.stdout


@pytest.mark.parametrize("preset", ["deepseek-v3", "deepseek-v3-ext-32k", "deepseek-v3-ext-128k"])
def test_preset_values_match_the_public_deepseek_v3_config(preset, run_cli):
    cfg = yaml.safe_load(run_cli("config", "--config", preset, "--dump").stdout)["model"]
    assert cfg["attention"]["type"] == "mla" and cfg["router"]["type"] == "deepseek_v3"
    assert cfg["ffn"]["type"] == "deepseek_moe"
    cfg = {**cfg, **cfg.pop("attention"), **cfg.pop("router"), **cfg.pop("ffn")}  # HF's config.json is flat
    expected = {
        "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
        "num_hidden_layers": 61, "num_attention_heads": 128, "q_lora_rank": 1536, "kv_lora_rank": 512,
        "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "n_routed_experts": 256,
        "n_shared_experts": 1, "num_experts_per_tok": 8, "n_group": 8, "topk_group": 4,
        "routed_scaling_factor": 2.5, "norm_topk_prob": True, "scoring_func": "sigmoid",
        "first_k_dense_replace": 3, "num_nextn_predict_layers": 1,
    }
    assert {k: cfg[k] for k in expected} == expected
    if preset == "deepseek-v3":  # pre-training: plain RoPE at 4K; the extension stages add YaRN
        assert cfg["rope_scaling"]["type"] == "none" and cfg["max_position_embeddings"] == 4096
    else:
        assert cfg["rope_scaling"]["type"] == "yarn" and cfg["rope_scaling"]["factor"] == 40.0


def test_every_dumped_key_is_documented(run_cli):
    docs = (REPO / "docs" / "configuration.md").read_text()
    tree = yaml.safe_load(run_cli("config", "--dump").stdout)

    def keys(node, prefix=""):
        for k, v in node.items():
            if isinstance(v, dict):
                yield from keys(v, f"{prefix}{k}.")
            else:
                yield prefix + k

    missing = [k for k in keys(tree) if f"`{k}`" not in docs]
    assert not missing


def test_config_errors_exit_2_with_message(run_cli, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": {"hidden_size": "wide"}}')
    result = run_cli("config", "--config", str(bad))
    assert result.returncode == 2
    assert "'model.hidden_size' expects int, got string 'wide'" in result.stderr
    result = run_cli("config", "--set", "train.micro_batch_size=3")
    assert result.returncode == 2
    assert "train.global_batch_size (16) must be divisible by train.micro_batch_size (3)" in result.stderr


def test_shard_prints_a_ranks_holding_and_rejects_bad_ranks(run_cli):
    layout = ("--set", "parallel.ep=2", "--set", "train.micro_batch_size=4")
    ranks = [run_cli("config", *layout, "--world-size", "4", "--rank", str(r), "--shard") for r in range(4)]
    assert all(r.returncode == 0 for r in ranks), [r.stderr for r in ranks]
    assert "routed experts held  [0, 4) of each MoE layer" in ranks[0].stdout
    assert "routed experts held  [4, 8) of each MoE layer" in ranks[3].stdout
    one = run_cli("config", "--world-size", "1", "--shard")
    assert one.returncode == 0, one.stderr
    held = [int(re.search(r"parameters\s+(\d+) of (\d+)", r.stdout).group(1)) for r in ranks + [one]]
    total = int(re.search(r"parameters\s+\d+ of (\d+)", one.stdout).group(1))
    assert held[-1] == total and all(h < total for h in held[:-1])
    assert f"AdamW moments        {2 * total} elements" in one.stdout
    for args, message in [(("--world-size", "4", "--rank", "4"), "--rank 4 is outside the world of 4 ranks (allowed: 0..3)"),
                          ((), "--shard needs --world-size"),
                          (("--world-size", "3"), "parallel.ep (2) must divide the world size (3 ranks)")]:
        result = run_cli("config", *layout, *args, "--shard")
        assert result.returncode == 2 and message in result.stderr, result.stderr
    result = run_cli("config", "--rank", "1")
    assert result.returncode == 2 and "--rank is an option of --shard" in result.stderr, result.stderr
