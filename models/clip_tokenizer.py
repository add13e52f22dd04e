"""CLIP's BPE tokenizer as transformers' CLIPTokenizer, rebuilt offline from the vocabulary file
that open_clip ships, so prompts tokenize to the same ids as with Stable Diffusion's own tokenizer.
The toy Stable Diffusion pipeline (models/toy) and the tests' tiny pipelines use it; no download.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
from collections.abc import Iterable
from pathlib import Path

CLIP_CONTEXT_LENGTH = 77
CLIP_VOCAB_SIZE = 49408
BOS_TOKEN, EOS_TOKEN = "<|startoftext|>", "<|endoftext|>"
BOS_ID, EOS_ID = 49406, 49407


def _byte_alphabet() -> list[str]:
    """The 256 characters that stand for the bytes 0..255 in byte-level BPE, in vocabulary order.

    Bytes whose Latin-1 character is printable and not a space ('!'..'~', '¡'..'¬', '®'..'ÿ') stand
    for themselves and come first, in byte order; every other byte b gets chr(256 + k), where k
    counts those other bytes in byte order, and they follow.
    """
    visible = [b for b in range(256)
               if ord("!") <= b <= ord("~") or ord("¡") <= b <= ord("¬") or ord("®") <= b <= ord("ÿ")]
    hidden = [b for b in range(256) if b not in set(visible)]
    return [chr(b) for b in visible] + [chr(256 + k) for k in range(len(hidden))]


def _bpe_file() -> Path:
    import open_clip

    return Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"


@functools.lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary (token -> id) and ranked merges, derived from open_clip's BPE file.

    The file holds a header line and then merge rules, best first; CLIP uses the first
    49152 - 256 - 2 of them. Its vocabulary is the byte alphabet, the same with the end-of-word
    marker "</w>", the result of each merge, and then the two special tokens: 49408 entries.
    """
    with gzip.open(_bpe_file(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    n_merges = 49152 - 256 - 2
    merges = [tuple(line.split()) for line in lines[1:1 + n_merges]]
    alphabet = _byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges] + [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != CLIP_VOCAB_SIZE or vocab[BOS_TOKEN] != BOS_ID or vocab[EOS_TOKEN] != EOS_ID:
        raise RuntimeError(f"unexpected CLIP vocabulary from {_bpe_file()}: {len(vocab)} entries")
    return vocab, merges


def build_clip_tokenizer(context_length: int = CLIP_CONTEXT_LENGTH, words: Iterable[str] | None = None):
    """transformers' CLIPTokenizer with CLIP's real vocabulary, as SD 1.x ships it (pad = <|endoftext|>).

    With ``words``, a reduced vocabulary: the byte alphabet, only the merges those words use, and
    the two special tokens. The words tokenize into the same pieces as with the full vocabulary
    (BPE applies the best-ranked applicable merge at each step, and the dropped merges are never
    chosen for them), under new, dense ids; a toy text encoder then needs a few hundred embedding
    rows instead of 49408.
    """
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    if words is not None:
        vocab, merges = _reduced_vocab_and_merges(merges, words)
    # The vocabulary and merges go in as objects: this transformers' CLIPTokenizer takes `vocab`
    # (dict) and `merges` (list of pairs); given file paths under other names it silently falls back
    # to a placeholder vocabulary of the special tokens alone.
    tokenizer = CLIPTokenizer(
        vocab=dict(vocab), merges=list(merges),
        unk_token=EOS_TOKEN, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN,
        model_max_length=context_length,
    )
    if len(tokenizer) != len(vocab):
        raise RuntimeError(f"CLIPTokenizer built with {len(tokenizer)} tokens, expected {len(vocab)}")
    return tokenizer


def _bpe_merges_used(word: str, ranks: dict[tuple[str, str], int]) -> list[tuple[str, str]]:
    """The merges byte-level BPE applies to one lower-case word, in order."""
    pieces = list(word[:-1]) + [word[-1] + "</w>"]
    used = []
    while len(pieces) > 1:
        pairs = [(ranks.get(pair, len(ranks)), i) for i, pair in enumerate(zip(pieces, pieces[1:]))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        pair = (pieces[i], pieces[i + 1])
        used.append(pair)
        merged, k = [], 0
        while k < len(pieces):  # merge every occurrence of the pair, left to right
            if k < len(pieces) - 1 and (pieces[k], pieces[k + 1]) == pair:
                merged.append(pieces[k] + pieces[k + 1])
                k += 2
            else:
                merged.append(pieces[k])
                k += 1
        pieces = merged
    return used


def _reduced_vocab_and_merges(merges: list[tuple[str, str]], words: Iterable[str]):
    ranks = {pair: i for i, pair in enumerate(merges)}
    kept: set[tuple[str, str]] = set()
    for word in words:
        for piece in re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", word.lower()):
            if all(c.isascii() for c in piece):
                kept.update(_bpe_merges_used(piece, ranks))
    kept_merges = sorted(kept, key=ranks.__getitem__)
    alphabet = _byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in kept_merges]
    tokens = list(dict.fromkeys(tokens)) + [BOS_TOKEN, EOS_TOKEN]
    return {token: i for i, token in enumerate(tokens)}, kept_merges


def write_clip_vocab_files(tokenizer_dir: Path, words: Iterable[str] | None = None) -> None:
    """Add vocab.json and merges.txt beside tokenizer.json, as SD checkpoints' tokenizer folders have
    them, so loaders that read the BPE files rather than tokenizer.json (transformers 4's slow
    CLIPTokenizer) find them too. ``words`` as in build_clip_tokenizer."""
    vocab, merges = clip_vocab_and_merges()
    if words is not None:
        vocab, merges = _reduced_vocab_and_merges(merges, words)
    tokenizer_dir = Path(tokenizer_dir)
    (tokenizer_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (tokenizer_dir / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
