"""What the HF parity tests share: the token batch, HF forward with the router's choices captured,
the convert/forward round trip through the latentmoe CLI, and the gradient comparison that maps
transformers v5's fused expert tensors onto latentmoe's per-expert names."""
import torch
from safetensors.torch import load_file

IDS = [[5, 17, 3, 88, 41, 0, 9, 62, 33, 21, 70, 2], [11, 96, 4, 4, 50, 13, 27, 8, 64, 19, 35, 90]]


def hf_forward_with_routing(model, ids, router_class: str):
    """Logits and, per MoE layer, the chosen expert ids sorted (HF routers return them unsorted)."""
    routing = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: routing.append(out[2].sort(-1).values))
             for m in model.modules() if m.__class__.__name__ == router_class]
    assert hooks, f"no {router_class} in the HF model"
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


def scaled_error(got, want):
    return (got - want).abs().max().item() / max(want.abs().max().item(), 1e-12)


def hf_lm_loss(model):
    """Runs forward and backward of the next-token loss on IDS; returns the loss."""
    ids = torch.tensor(IDS)
    logits = model(ids).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1))
    loss.backward()
    return loss


def assert_gradients_match(model, ours, tolerance=1e-4):
    """Every HF parameter gradient against latentmoe's (`grad.<name>` in `ours`), relative to the
    tensor's scale. An expert no token chose has no gradient on our side; HF's must then be zero."""
    inter = model.config.moe_intermediate_size
    checked = 0

    def check(ours_name, hf_grad):
        nonlocal checked
        if f"grad.{ours_name}" not in ours:
            assert hf_grad.abs().max().item() == 0.0, f"{ours_name}: no gradient from latentmoe, HF's is nonzero"
            return
        assert scaled_error(ours[f"grad.{ours_name}"], hf_grad) <= tolerance, ours_name
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
    assert checked == len([k for k in ours if k.startswith("grad.")]), "latentmoe has gradients HF lacks"
