"""A CLIP byte-level BPE tokenizer built from the tiny world's vocabulary (no hub download).

The vocabulary has the 256 byte symbols (each also with the end-of-word marker), one whole-word
token per caption word (reached by left-to-right merges), and the two CLIP special tokens. Any
other text still tokenizes, byte by byte, exactly as CLIP's tokenizer would with these merges.
"""

from __future__ import annotations

import json
from pathlib import Path


def _bytes_to_unicode() -> dict[int, str]:
    # CLIP/GPT-2's reversible byte -> printable-character table.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_tokenizer(folder: Path, words: list[str], max_length: int) -> None:
    """Write vocab.json, merges.txt and the tokenizer config that ``CLIPTokenizer.from_pretrained`` reads."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols]
    merges: list[str] = []
    for word in sorted(set(words)):
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        merged = parts[0]
        for part in parts[1:]:
            rule = f"{merged} {part}"
            merged += part
            if rule not in merges:
                merges.append(rule)
                vocab_list.append(merged)
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": max_length, "do_lower_case": True,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))


def build_tokenizer(folder: Path, words: list[str], max_length: int):
    from transformers import CLIPTokenizer

    write_tokenizer(folder, words, max_length)
    return CLIPTokenizer.from_pretrained(str(folder))
