"""latentmoe vs HF transformers' DeepseekV3 on CPU in fp32: logits (max |diff| <= 1e-4), routing
choices (identical), gradients of the LM loss (<= 1e-4 relative to each tensor's scale), and the
export direction (no missing keys, same logits)."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

from hf_parity_util import IDS, assert_gradients_match, hf_forward_with_routing, hf_lm_loss, latentmoe_forward, to_latentmoe

torch.set_num_threads(2)

BASE = dict(
    vocab_size=97, hidden_size=48, intermediate_size=72, moe_intermediate_size=24, num_hidden_layers=3,
    num_attention_heads=3, num_key_value_heads=3, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4,
    v_head_dim=6, n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=3, n_group=4, topk_group=2,
    first_k_dense_replace=1, routed_scaling_factor=2.5, norm_topk_prob=True, max_position_embeddings=64,
    rms_norm_eps=1e-6, initializer_range=0.1, tie_word_embeddings=False,
)
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8, "beta_fast": 32.0,
        "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 0.707, "rope_theta": 10000.0}
CASES = {
    "q_lora_yarn_groups": dict(q_lora_rank=24, rope_parameters=YARN),
    "no_q_lora": dict(q_lora_rank=None),
    "two_shared_two_dense": dict(q_lora_rank=24, n_shared_experts=2, first_k_dense_replace=2, num_hidden_layers=4,
                                 rope_parameters=YARN),
    "no_groups_attention_bias": dict(q_lora_rank=24, n_group=1, topk_group=1, attention_bias=True),
}


def make_hf_model(case: str) -> DeepseekV3ForCausalLM:
    torch.manual_seed(7)
    cfg = DeepseekV3Config(**{**BASE, **CASES[case]}, attn_implementation="eager")
    model = DeepseekV3ForCausalLM(cfg).float()
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "e_score_correction_bias"):
                module.e_score_correction_bias.copy_(torch.randn_like(module.e_score_correction_bias) * 0.05)
            if module.__class__.__name__ == "DeepseekV3RMSNorm":
                module.weight.copy_(1 + 0.1 * torch.randn_like(module.weight))
            if hasattr(module, "bias") and isinstance(module.bias, torch.Tensor):
                module.bias.normal_(0, 0.05)
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_and_routing_match_hf(case, run_cli, tmp_path):
    model = make_hf_model(case).eval()
    with torch.no_grad():
        hf_logits, hf_routing = hf_forward_with_routing(model, IDS, "DeepseekV3TopkRouter")
    ours = latentmoe_forward(run_cli, to_latentmoe(run_cli, tmp_path, model), tmp_path)
    assert (ours["logits"] - hf_logits).abs().max().item() <= 1e-4
    assert len(hf_routing) == model.config.num_hidden_layers - model.config.first_k_dense_replace
    for i, hf_ids in enumerate(hf_routing):
        assert torch.equal(ours[f"routing.{i}"], hf_ids), f"routing differs in MoE layer {i}"


@pytest.mark.parametrize("case", ["q_lora_yarn_groups", "no_q_lora"])
def test_gradients_match_hf(case, run_cli, tmp_path):
    model = make_hf_model(case).train()
    loss = hf_lm_loss(model)
    ours = latentmoe_forward(run_cli, to_latentmoe(run_cli, tmp_path, model), tmp_path, grads=True)
    assert abs(ours["loss"].item() - loss.item()) <= 1e-5
    assert_gradients_match(model, ours)


@pytest.mark.parametrize("no_mtp", [False, True])
def test_export_loads_in_transformers(no_mtp, run_cli, tmp_path):
    ours, hf_dir = tmp_path / "ours", tmp_path / "hf"
    overrides = ["--set", "model.rope_scaling={type: yarn, factor: 4.0, original_max_position_embeddings: 8}",
                 "--set", "model.init_std=0.05"]
    assert run_cli("init", "--out", str(ours), *overrides).returncode == 0
    args = ["convert", "--checkpoint", str(ours), "--to-hf", str(hf_dir)] + (["--no-mtp"] if no_mtp else [])
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["rope_scaling"]["type"] == "yarn" and config["rope_parameters"]["rope_type"] == "yarn"
    model, info = DeepseekV3ForCausalLM.from_pretrained(hf_dir, output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"]
    num_layers = config["num_hidden_layers"]
    unexpected = set(info["unexpected_keys"])
    if no_mtp:
        assert not unexpected
    else:  # the MTP block at layer num_hidden_layers, as in the release (HF ignores layer 61 itself)
        assert unexpected and all(k.startswith(f"model.layers.{num_layers}.") for k in unexpected)
    ids = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]
    with torch.no_grad():
        hf_logits = model.eval()(torch.tensor(ids)).logits
    result = run_cli("forward", "--checkpoint", str(ours), "--ids", ",".join(map(str, ids[0])),
                     "--out", str(tmp_path / "f.safetensors"))
    assert result.returncode == 0, result.stderr
    assert (load_file(tmp_path / "f.safetensors")["logits"] - hf_logits).abs().max().item() <= 1e-4


def test_export_import_round_trip_keeps_mtp(run_cli, tmp_path):
    ours, hf_dir, back = tmp_path / "ours", tmp_path / "hf", tmp_path / "back"
    assert run_cli("init", "--out", str(ours)).returncode == 0
    assert run_cli("convert", "--checkpoint", str(ours), "--to-hf", str(hf_dir)).returncode == 0
    result = run_cli("convert", "--from-hf", str(hf_dir), "--out", str(back))
    assert result.returncode == 0, result.stderr
    a, b = load_file(ours / "model.safetensors"), load_file(back / "model.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("mtp.0.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fp8_blockwise_weights_are_dequantized(run_cli, tmp_path):
    model = make_hf_model("q_lora_yarn_groups").eval()
    hf_dir = tmp_path / "hf"
    model.save_pretrained(hf_dir)
    tensors = load_file(hf_dir / "model.safetensors")
    name = "model.layers.1.self_attn.kv_b_proj.weight"  # 3*(8+6)=42 x 16: partial 128-blocks
    weight = tensors[name]
    scale = weight.abs().amax().reshape(1, 1) / 448.0
    fp8 = (weight / scale).to(torch.float8_e4m3fn)
    tensors[name] = fp8
    tensors[name + "_scale_inv"] = scale.float()
    save_file(tensors, hf_dir / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((hf_dir / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "fp8", "weight_block_size": [128, 128]}
    (hf_dir / "config.json").write_text(json.dumps(config))
    ours = tmp_path / "ours"
    result = run_cli("convert", "--from-hf", str(hf_dir), "--out", str(ours))
    assert result.returncode == 0, result.stderr
    imported = load_file(ours / "model.safetensors")[name]
    assert torch.equal(imported, fp8.float() * scale)
    assert (imported - weight).abs().max().item() <= weight.abs().max().item() / 8  # e4m3 has 3 mantissa bits
