#!/usr/bin/env python3
"""Train latentmoe's default byte-level BPE tokenizer on the default corpus (Debian's
python3.11-doc reStructuredText sources) with HF `tokenizers`, the way Llama-3/DeepSeek-V3
tokenizers are built: a regex Split pre-tokenizer (Isolated), byte-level mapping, BPE merges.

The committed data/tokenizer/python-docs-bpe-8k.json was produced by:
    python tools/train_tokenizer.py --out data/tokenizer/python-docs-bpe-8k.json
Training is deterministic for a given corpus and tokenizers version (re-running reproduces the
file byte for byte; tests/python/test_tokenizer.py checks the committed file against the corpus).
"""
import argparse
import pathlib

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

CORPUS = pathlib.Path("/usr/share/doc/python3.11/html/_sources")
# Llama-3's split pattern (also the shape of DeepSeek-V3's): letters with one leading non-letter,
# numbers in groups of up to 3, punctuation runs, newline runs, other whitespace.
SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>"]


def corpus_files(root: pathlib.Path) -> list[pathlib.Path]:
    files = sorted(p for p in root.rglob("*.txt") if p.is_file())
    if not files:
        raise SystemExit(f"no *.txt under {root}: install Debian's python3.11-doc (tools/setup.sh does)")
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=pathlib.Path, default=CORPUS)
    parser.add_argument("--vocab-size", type=int, default=8192, help="including the special tokens")
    parser.add_argument("--out", type=pathlib.Path, required=True)
    args = parser.parse_args()

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab_size, min_frequency=2, special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    files = corpus_files(args.corpus)
    tokenizer.train([str(f) for f in files], trainer)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(args.out), pretty=False)
    print(f"trained on {len(files)} files: vocab {tokenizer.get_vocab_size()} -> {args.out}")


if __name__ == "__main__":
    main()
