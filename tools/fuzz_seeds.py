#!/usr/bin/env python3
"""Writes the committed seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/).

Run from the repository root: `python3 tools/fuzz_seeds.py`. Standard library only. Inputs that
a fuzz run found and that reproduce a fixed bug are added to the corpus by hand (named
`regression-*`) and are not touched here.
"""
import json
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fuzz" / "corpus"


def write(target, name, data):
    path = CORPUS / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None):
    header, buffer = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    sizes = {"F32": 4, "BF16": 2, "I64": 8, "U8": 1, "F8_E4M3": 1}
    for name, dtype, shape in tensors:
        numel = 1
        for d in shape:
            numel *= d
        nbytes = numel * sizes[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(buffer), len(buffer) + nbytes]}
        buffer += bytes(range(256)) * (nbytes // 256) + bytes(nbytes % 256)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + buffer


def idx(lengths, dtype_code=8, item=2, documents=None):
    documents = documents if documents is not None else list(range(len(lengths) + 1))
    out = b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", dtype_code)
    out += struct.pack("<Q", len(lengths)) + struct.pack("<Q", len(documents))
    out += b"".join(struct.pack("<i", n) for n in lengths)
    pointer = 0
    for n in lengths:
        out += struct.pack("<q", pointer)
        pointer += n * item
    out += b"".join(struct.pack("<q", d) for d in documents)
    return out


def small_tokenizer():
    full = json.loads((ROOT / "data" / "tokenizer" / "python-docs-bpe-8k.json").read_text())
    vocab = {t: i for t, i in full["model"]["vocab"].items() if i < 400}
    merges = [m for m in full["model"]["merges"] if m[0] in vocab and m[1] in vocab and m[0] + m[1] in vocab]
    full["model"]["vocab"] = vocab
    full["model"]["merges"] = merges
    full["added_tokens"] = [a for a in full["added_tokens"] if a["id"] < 400]
    return full


def main():
    write("fuzz_safetensors_header", "two-tensors", safetensors([("a.weight", "F32", [2, 3]), ("b", "BF16", [4])],
                                                                {"format": "pt"}))
    write("fuzz_safetensors_header", "scalar-empty-fp8",
          safetensors([("scalar", "I64", []), ("empty", "F32", [0, 5]), ("fp8", "F8_E4M3", [3, 3])]))
    write("fuzz_safetensors_header", "metadata-only", safetensors([], {"step": "7"}))
    write("fuzz_safetensors_index", "two-shards", json.dumps({
        "metadata": {"total_size": 1024},
        "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                       "lm_head.weight": "model-00002-of-00002.safetensors",
                       "model.layers.0.mlp.gate.weight": "sub/model-00002-of-00002.safetensors"}}, indent=2))
    write("fuzz_safetensors_index", "escaping", json.dumps({"weight_map": {"x": "../x.safetensors", "y": "/abs"}}))
    write("fuzz_indexed_dataset", "three-docs-u16", idx([5, 0, 7]))
    write("fuzz_indexed_dataset", "i32", idx([3, 4], dtype_code=4, item=4))
    write("fuzz_indexed_dataset", "sentences", idx([2, 2, 3], documents=[0, 2, 3]))
    write("fuzz_indexed_dataset", "empty", idx([]))
    write("fuzz_tokenizer_json", "small-bpe.json", json.dumps(small_tokenizer()))
    write("fuzz_bpe_encode", "python", "def f(x):\n    return x ** 2  # square\n\n\tprint(f'{x!r}')\r\n")
    write("fuzz_bpe_encode", "unicode", "Grüße, 世界! café naïve 😀 ✓ \u00a0\u2028 𝔘")
    write("fuzz_bpe_encode", "special", "<|begin_of_text|>text<|end_of_text|><|end_of_text|> 's 're 123456")
    write("fuzz_bpe_encode", "spaces", "   \n\n  \t \r\n  x  ")
    for preset in sorted((ROOT / "configs").glob("*.yaml")):
        write("fuzz_config", preset.name, preset.read_text())
    write("fuzz_config", "overrides.json", json.dumps({
        "model": {"hidden_size": 64, "q_lora_rank": None, "rope_scaling": {"type": "yarn", "factor": 4.0}},
        "train": {"steps": 3, "dtype": "bf16"}, "data": {"paths": ["a", "0.5", "b"]}}))
    write("fuzz_config", "flow.yaml", "{model: {num_hidden_layers: 2}, parallel: {ep: 2}, train: {micro_batch_size: 1}}\n")
    v3 = {
        "model_type": "deepseek_v3", "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432,
        "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_attention_heads": 128,
        "num_key_value_heads": 128, "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
        "qk_rope_head_dim": 64, "v_head_dim": 128, "n_routed_experts": 256, "n_shared_experts": 1,
        "num_experts_per_tok": 8, "n_group": 8, "topk_group": 4, "routed_scaling_factor": 2.5,
        "norm_topk_prob": True, "scoring_func": "sigmoid", "first_k_dense_replace": 3, "rms_norm_eps": 1e-6,
        "max_position_embeddings": 163840, "num_nextn_predict_layers": 1, "rope_theta": 10000,
        "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                         "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
        "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]},
        "tie_word_embeddings": False}
    write("fuzz_hf_config", "deepseek-v3.json", json.dumps(v3, indent=2))
    lite = dict(v3, model_type="deepseek_v2", q_lora_rank=None, hidden_size=2048, num_hidden_layers=27,
                num_attention_heads=16, num_key_value_heads=16, n_routed_experts=64, n_shared_experts=2,
                num_experts_per_tok=6, n_group=1, topk_group=1, scoring_func="softmax", first_k_dense_replace=1)
    del lite["quantization_config"]
    write("fuzz_hf_config", "deepseek-v2-lite.json", json.dumps(lite))
    v5 = dict(v3, rope_parameters={"rope_type": "default", "rope_theta": 50000.0})
    del v5["rope_scaling"]
    write("fuzz_hf_config", "v5-rope-parameters.json", json.dumps(v5))


if __name__ == "__main__":
    main()
