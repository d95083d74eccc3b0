"""A 2-layer random BERT with a WordPiece vocabulary of a test corpus: fine-tuning tests run
without a download (shared by the one-text and the pair fine-tuning tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import needs


def tiny_bert_loader(tmp: Path, words: Iterable[str]) -> Callable[[str], tuple[object, object]]:
    """A replacement for ``finetune._load_base``: the same random model on every call."""
    needs.module("transformers", needs.EMBED)
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = tmp / "vocab.txt"
    words = sorted(set(words))
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words,
                                *map(str, range(10))]) + "\n")

    def load(key: str) -> tuple[object, object]:
        torch.manual_seed(0)
        cfg = BertConfig(vocab_size=5 + len(words) + 10, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
        return BertTokenizerFast(str(vocab)), BertModel(cfg)

    return load
