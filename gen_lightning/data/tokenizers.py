"""Tokenizers for the text DataModule: `byte` (no training, 257 ids) and `bpe` (HF `tokenizers`).

Both expose the same small surface: `encode(str) -> list[int]`, `decode(ids) -> str`, `vocab_size`,
`eot_id` (the end-of-text id placed between documents), `to_json()` / `from_json()` so a checkpoint
can carry its tokenizer and sampling never depends on the data folder still being there.
"""

from __future__ import annotations

import json
from typing import Iterable, Iterator, Protocol, Sequence

EOT = "<|endoftext|>"


class Tokenizer(Protocol):
    kind: str
    vocab_size: int
    eot_id: int

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def to_json(self) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255, plus 256 = end of text. Lossless for any input, needs no training."""

    kind = "byte"
    vocab_size = 257
    eot_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    def to_json(self) -> str:
        return json.dumps({"kind": "byte"})


class BPETokenizer:
    """Byte-level BPE (GPT-2 style) trained offline with Hugging Face `tokenizers`."""

    kind = "bpe"

    def __init__(self, hf_tokenizer) -> None:
        self._tok = hf_tokenizer
        self.vocab_size = hf_tokenizer.get_vocab_size()
        eot = hf_tokenizer.token_to_id(EOT)
        if eot is None:
            raise ValueError(f"BPE tokenizer has no {EOT} token")
        self.eot_id = eot

    @classmethod
    def train(cls, texts: Iterator[str], vocab_size: int) -> "BPETokenizer":
        from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOT],
            # Start from all 256 bytes so that any input is encodable (no unknown token needed).
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts))]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids if int(i) != self.eot_id])

    def to_json(self) -> str:
        return json.dumps({"kind": "bpe", "tokenizer": self._tok.to_str()})


def tokenizer_from_json(text: str) -> Tokenizer:
    spec = json.loads(text)
    if spec["kind"] == "byte":
        return ByteTokenizer()
    if spec["kind"] == "bpe":
        from tokenizers import Tokenizer as HFTokenizer

        return BPETokenizer(HFTokenizer.from_str(spec["tokenizer"]))
    raise ValueError(f"unknown tokenizer kind {spec['kind']!r}")
