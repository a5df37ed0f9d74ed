"""Tokenizer and data files against the Python references: HF `tokenizers` (token-exact on the
whole default corpus and on an edge-case text, two pre-tokenizer styles) and Megatron-Core's own
IndexedDataset (reads our files; we read its files)."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from conftest import REPO

CORPUS = pathlib.Path("/usr/share/doc/python3.11/html/_sources")
DEFAULT_TOKENIZER = REPO / "data" / "tokenizer" / "python-docs-bpe-8k.json"
EDGE_TEXT = (
    "Unicode: naïve café Ünïcödé — “quotes” ‘single’ … ½ ² ℕ\n"
    "Emoji: 🎉🚀 👩‍👩‍👧‍👦 🇩🇪 ❤️ \n"
    "CJK: 你好，世界。日本語のテキスト、한국어 텍스트\n"
    "Combining: e\u0301 a\u0308 n\u0303 \u0915\u093f \u0627\u0644\u0639\u0631\u0628\u064a\u0629\n"
    "Whitespace:      many spaces\t\ttabs\n\n\n\n   \r\n trailing   \n"
    "Numbers: 1234567890 3.14159 -42 1e-6 0x1F 1,000,000 ٣٤٥\n"
    "Specials inside text: <|end_of_text|>mid<|begin_of_text|> and <|end_of_text|><|end_of_text|>\n"
    "Code: def f(x):\n    return x**2  # comment\n'''doc''' it's we're they'll I'd I'M\n"
)


def hf_encode(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False).ids


@pytest.fixture(scope="module")
def gpt2_style_tokenizer(tmp_path_factory) -> pathlib.Path:
    """A second byte-level BPE using the GPT-2 ByteLevel regex (use_regex=True, prefix space)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    files = sorted(CORPUS.rglob("*.txt"))[:40]
    tok.train([str(f) for f in files], trainer)
    path = tmp_path_factory.mktemp("tok") / "gpt2_style.json"
    tok.save(str(path))
    return path


def test_committed_tokenizer_is_reproducible(tmp_path):
    out = tmp_path / "tok.json"
    subprocess.run([sys.executable, str(REPO / "tools" / "train_tokenizer.py"), "--out", str(out)], check=True,
                   capture_output=True)
    assert out.read_bytes() == DEFAULT_TOKENIZER.read_bytes()


def test_whole_corpus_token_exact_and_megatron_reads_it(run_cli, tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    prefix = tmp_path / "corpus"
    result = run_cli("prepare-data", "--input", str(CORPUS), "--output", str(prefix), "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "documents" in result.stderr and "MB/s" in result.stderr
    hf = Tokenizer.from_file(str(DEFAULT_TOKENIZER))
    eos = hf.token_to_id("<|end_of_text|>")
    files = sorted(CORPUS.rglob("*.txt"))
    dataset = IndexedDataset(str(prefix))
    assert len(dataset) == len(files) > 400
    assert dataset.index.dtype == np.uint16
    mismatched = [f.name for i, f in enumerate(files)
                  if dataset[i].tolist() != hf_encode(hf, f.read_text(encoding="utf-8")) + [eos]]
    assert not mismatched


@pytest.mark.parametrize("which", ["default", "gpt2_style"])
def test_edge_cases_token_exact_and_round_trip(which, gpt2_style_tokenizer, run_cli, latentmoe_bin, tmp_path):
    path = DEFAULT_TOKENIZER if which == "default" else gpt2_style_tokenizer
    text_file = tmp_path / "edge.txt"
    text_file.write_text(EDGE_TEXT, encoding="utf-8")
    result = run_cli("tokenize", "--tokenizer", str(path), "--file", str(text_file))
    assert result.returncode == 0, result.stderr
    ours = [int(x) for x in result.stdout.strip().split(",")]
    hf = Tokenizer.from_file(str(path))
    assert ours == hf_encode(hf, EDGE_TEXT)
    # Bytes, not text mode: universal newlines would turn the \r\n of the input into \n.
    decoded = subprocess.run([str(latentmoe_bin), "tokenize", "--tokenizer", str(path), "--decode", result.stdout.strip()],
                             capture_output=True, check=True).stdout.decode("utf-8")
    # add_prefix_space (GPT-2 style) puts one space before the first word, as HF's decode keeps it.
    expected = EDGE_TEXT if which == "default" else " " + EDGE_TEXT
    assert decoded == expected
    assert decoded == hf.decode(ours, skip_special_tokens=False)


def test_latentmoe_reads_megatron_built_files(run_cli, tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 100000, size=int(n)).astype(np.int32) for n in [5, 1, 17, 0, 9]]
    prefix = tmp_path / "mega"
    builder = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=np.int32)
    for d in docs:
        builder.add_document(torch.from_numpy(d), [len(d)])
    builder.finalize(str(prefix) + ".idx")
    args = ["inspect-data", "--dataset", str(prefix)] + sum((["--sequence", str(i)] for i in range(len(docs))), [])
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    summary = json.loads(lines[0])
    assert summary == {"sequences": 5, "documents": 5, "tokens": 32, "dtype_code": 4, "max_token": int(max(d.max() for d in docs if len(d)))}
    for i, d in enumerate(docs):
        assert lines[1 + i] == ",".join(map(str, d.tolist()))


def test_unsupported_tokenizer_components_are_named(run_cli, tmp_path):
    base = json.loads(DEFAULT_TOKENIZER.read_text())
    cases = {
        "normalizer": ({**base, "normalizer": {"type": "NFKC"}}, "unsupported normalizer 'NFKC'"),
        "model": ({**base, "model": {**base["model"], "type": "WordPiece"}}, "unsupported model type 'WordPiece'"),
        "pre": ({**base, "pre_tokenizer": {"type": "Whitespace"}}, "unsupported pre_tokenizer component 'Whitespace'"),
        "fallback": ({**base, "model": {**base["model"], "byte_fallback": True}}, "byte_fallback"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(content))
        result = run_cli("tokenize", "--tokenizer", str(path), "--text", "hi")
        assert result.returncode == 2, name
        assert str(path) in result.stderr and message in result.stderr, result.stderr


def test_bad_text_input_is_named(run_cli, tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    result = run_cli("prepare-data", "--input", str(bad), "--output", str(tmp_path / "out"))
    assert result.returncode != 0
    assert "latin1.txt" in result.stderr and "not valid UTF-8" in result.stderr
    assert not (tmp_path / "out.bin").exists() and not (tmp_path / "out.bin.tmp").exists()
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text('{"text": "ok"}\n{"body": "no text"}\n')
    result = run_cli("prepare-data", "--input", str(jsonl), "--output", str(tmp_path / "j"))
    assert result.returncode != 0 and "docs.jsonl:2" in result.stderr and "'text'" in result.stderr
    result = run_cli("prepare-data", "--input", str(tmp_path / "nothing*.txt"), "--output", str(tmp_path / "n"))
    assert result.returncode != 0 and "no .txt/.jsonl files match" in result.stderr
