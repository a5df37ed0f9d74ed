"""The registry's worked example: latentmoe's `gqa` attention + `softmax_topk` router vs HF
transformers' Qwen3MoeForCausalLM on CPU in fp32 — logits (max |diff| <= 1e-4), routing choices
(identical), gradients, greedy generation (identical tokens) and the export direction (loads with
from_pretrained without missing keys, same logits)."""
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

from hf_parity_util import IDS, assert_gradients_match, hf_forward_with_routing, hf_lm_loss, latentmoe_forward, to_latentmoe

torch.set_num_threads(2)

BASE = dict(
    vocab_size=97, hidden_size=48, intermediate_size=72, moe_intermediate_size=24, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=8, num_experts_per_tok=3,
    norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[], max_position_embeddings=64,
    rms_norm_eps=1e-6, initializer_range=0.1, tie_word_embeddings=False, rope_theta=10000.0,
)
CASES = {
    "all_sparse": dict(),
    "normalized_topk_dense_first": dict(norm_topk_prob=True, mlp_only_layers=[0]),
    "mha_attention_bias": dict(num_key_value_heads=4, attention_bias=True, head_dim=8),
}


def make_hf_model(case: str) -> Qwen3MoeForCausalLM:
    torch.manual_seed(11)
    cfg = Qwen3MoeConfig(**{**BASE, **CASES[case]}, attn_implementation="eager")
    cfg.num_local_experts = cfg.num_experts = BASE["num_experts"]  # v5 reads num_local_experts
    model = Qwen3MoeForCausalLM(cfg).float()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1 + 0.1 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.normal_(0, 0.05)
            elif name.endswith("mlp.gate.weight"):  # v5 initializes the router to zeros: ties everywhere
                param.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_and_routing_match_hf(case, run_cli, tmp_path):
    model = make_hf_model(case).eval()
    with torch.no_grad():
        hf_logits, hf_routing = hf_forward_with_routing(model, IDS, "Qwen3MoeTopKRouter")
    ours_dir = to_latentmoe(run_cli, tmp_path, model)
    config = (ours_dir / "config.yaml").read_text()
    assert "type: gqa" in config and "type: softmax_topk" in config
    ours = latentmoe_forward(run_cli, ours_dir, tmp_path)
    assert (ours["logits"] - hf_logits).abs().max().item() <= 1e-4
    assert len(hf_routing) == model.config.num_hidden_layers - len(model.config.mlp_only_layers)
    for i, hf_ids in enumerate(hf_routing):
        assert torch.equal(ours[f"routing.{i}"], hf_ids), f"routing differs in MoE layer {i}"


def test_gradients_match_hf(run_cli, tmp_path):
    model = make_hf_model("normalized_topk_dense_first").train()
    loss = hf_lm_loss(model)
    ours = latentmoe_forward(run_cli, to_latentmoe(run_cli, tmp_path, model), tmp_path, grads=True)
    assert abs(ours["loss"].item() - loss.item()) <= 1e-5
    assert_gradients_match(model, ours)


def test_greedy_generation_matches_hf(run_cli, tmp_path):
    model = make_hf_model("all_sparse").eval()
    ours = to_latentmoe(run_cli, tmp_path, model)
    prompt = IDS[0][:5]
    with torch.no_grad():
        hf = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                            pad_token_id=0)[0, len(prompt):].tolist()
    result = run_cli("generate", "--checkpoint", str(ours), "--prompt-ids", ",".join(map(str, prompt)),
                     "--max-tokens", "12")
    assert result.returncode == 0, result.stderr
    assert [int(t) for t in result.stdout.strip().split(",")] == hf


def test_export_loads_in_transformers(run_cli, tmp_path):
    ours, hf_dir = tmp_path / "ours", tmp_path / "hf"
    assert run_cli("init", "--config", "qwen3-moe-tiny", "--out", str(ours), "--set", "model.init_std=0.05").returncode == 0
    result = run_cli("convert", "--checkpoint", str(ours), "--to-hf", str(hf_dir))
    assert result.returncode == 0, result.stderr
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["model_type"] == "qwen3_moe"
    model, info = Qwen3MoeForCausalLM.from_pretrained(hf_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ids = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]
    with torch.no_grad():
        hf_logits = model.eval()(torch.tensor(ids)).logits
    result = run_cli("forward", "--checkpoint", str(ours), "--ids", ",".join(map(str, ids[0])),
                     "--out", str(tmp_path / "f.safetensors"))
    assert result.returncode == 0, result.stderr
    assert (load_file(tmp_path / "f.safetensors")["logits"] - hf_logits).abs().max().item() <= 1e-4
