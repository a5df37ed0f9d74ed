"""The registry's worked example: latentmoe's `gqa` attention + `softmax_topk` router vs HF
transformers' Qwen3MoeForCausalLM on CPU in fp32 — logits (max |diff| <= 1e-4), routing choices
(identical), gradients, greedy generation (identical tokens) and the export direction (loads with
from_pretrained without missing keys, same logits)."""
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

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
IDS = [[5, 17, 3, 88, 41, 0, 9, 62, 33, 21, 70, 2], [11, 96, 4, 4, 50, 13, 27, 8, 64, 19, 35, 90]]


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


def hf_forward_with_routing(model, ids):
    routing = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: routing.append(out[2].sort(-1).values))
             for m in model.modules() if m.__class__.__name__ == "Qwen3MoeTopKRouter"]
    try:
        logits = model(torch.tensor(ids)).logits
    finally:
        for h in hooks:
            h.remove()
    return logits, routing


def to_latentmoe(run_cli, tmp_path, model):
    hf_dir, ours = tmp_path / "hf", tmp_path / "ours"
    model.save_pretrained(hf_dir)
    result = run_cli("convert", "--from-hf", str(hf_dir), "--out", str(ours))
    assert result.returncode == 0, result.stderr
    return ours


def latentmoe_forward(run_cli, checkpoint, tmp_path, grads=False):
    out = tmp_path / "forward.safetensors"
    ids = ";".join(",".join(map(str, row)) for row in IDS)
    args = ["forward", "--checkpoint", str(checkpoint), "--ids", ids, "--out", str(out)] + (["--grads"] if grads else [])
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    return load_file(out)


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_and_routing_match_hf(case, run_cli, tmp_path):
    model = make_hf_model(case).eval()
    with torch.no_grad():
        hf_logits, hf_routing = hf_forward_with_routing(model, IDS)
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
    ids = torch.tensor(IDS)
    logits = model(ids).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1))
    loss.backward()
    ours = latentmoe_forward(run_cli, to_latentmoe(run_cli, tmp_path, model), tmp_path, grads=True)
    assert abs(ours["loss"].item() - loss.item()) <= 1e-5
    inter = model.config.moe_intermediate_size

    def scaled_error(got, want):
        return (got - want).abs().max().item() / max(want.abs().max().item(), 1e-12)

    checked = 0

    def check(ours_name, hf_grad):
        nonlocal checked
        if f"grad.{ours_name}" not in ours:  # an expert no token chose: no gradient here, zeros in HF
            assert hf_grad.abs().max().item() == 0.0, ours_name
            return
        assert scaled_error(ours[f"grad.{ours_name}"], hf_grad) <= 1e-4, ours_name
        checked += 1

    for name, param in model.named_parameters():
        if name.endswith("experts.gate_up_proj"):  # transformers v5 fuses experts in memory
            prefix = name[: -len("gate_up_proj")]
            for e in range(param.shape[0]):
                check(f"{prefix}{e}.gate_proj.weight", param.grad[e, :inter])
                check(f"{prefix}{e}.up_proj.weight", param.grad[e, inter:])
        elif name.endswith("experts.down_proj"):
            prefix = name[: -len("down_proj")]
            for e in range(param.shape[0]):
                check(f"{prefix}{e}.down_proj.weight", param.grad[e])
        else:
            check(name, param.grad)
    assert checked > 0
    assert checked == len([k for k in ours if k.startswith("grad.")])


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
