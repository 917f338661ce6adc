"""Tokenizers for the text DataModule: `byte` (no training, 257 ids), `bpe` (trained with HF `tokenizers`)
and an existing tokenizer loaded from files (`load_tokenizer`): a Hugging Face `tokenizer.json`, or
GPT-2's own `vocab.json` + `merges.txt`, so that a GPT-2 imported with `init_from` keeps its token ids.

All expose the same small surface: `encode(str) -> list[int]`, `decode(ids) -> str`, `vocab_size`,
`eot_id` (the end-of-text id placed between documents), `to_json()` / `from_json()` so a checkpoint
can carry its tokenizer and sampling never depends on the data folder still being there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator, Protocol, Sequence

import numpy as np

from gen_lightning.data.bpe_pieces import PieceEncoder
from gen_lightning.errors import UserError

EOT = "<|endoftext|>"
GPT2_FILES = ("vocab.json", "merges.txt")


class Tokenizer(Protocol):
    kind: str
    vocab_size: int
    eot_id: int

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    def encode_stream(self, texts: Sequence[str], dtype: str) -> np.ndarray:
        """What a token file holds: the ids of each text followed by `eot_id`, as one array."""
        ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def to_json(self) -> str: ...


def _each_then_eot(parts: list[np.ndarray], eot_id: int, dtype: str) -> np.ndarray:
    """The arrays one after the other, each followed by `eot_id`, as one `dtype` array: a token file's content."""
    eot = np.asarray([eot_id], dtype=dtype)
    out = [x for part in parts for x in (part.astype(dtype, copy=False), eot)]
    return np.concatenate(out) if out else np.zeros(0, dtype=dtype)


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255, plus 256 = end of text. Lossless for any input, needs no training."""

    kind = "byte"
    vocab_size = 257
    eot_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def encode_stream(self, texts: Sequence[str], dtype: str) -> np.ndarray:
        # ids 0..255 are the UTF-8 bytes themselves: a numpy view of them (75 MB/s), no Python int per byte.
        return _each_then_eot([np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts], self.eot_id, dtype)

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    def to_json(self) -> str:
        return json.dumps({"kind": "byte"})


class BPETokenizer:
    """A Hugging Face `tokenizers` tokenizer: a byte-level BPE (GPT-2 style) trained offline here, or one
    loaded from files (`load_tokenizer`). Saved as kind `bpe` either way: its JSON is the whole tokenizer."""

    kind = "bpe"

    def __init__(self, hf_tokenizer) -> None:
        self._tok = hf_tokenizer
        self.vocab_size = hf_tokenizer.get_vocab_size()
        # The fast corpus encoder, for tokenizers whose ids it reproduces exactly (data/bpe_pieces.py).
        self._pieces = PieceEncoder.for_tokenizer(hf_tokenizer)
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

    def encode_stream(self, texts: Sequence[str], dtype: str) -> np.ndarray:
        """The ids of `texts`, each followed by the end-of-text id, as one array: what a token file holds. The same
        ids as `encode_batch`, by distinct pre-token where that is exact (data/bpe_pieces.py: ~5x faster on code)."""
        if self._pieces is not None:
            return self._pieces.encode_stream(texts, self.eot_id, dtype)
        return _each_then_eot([np.asarray(ids) for ids in self.encode_batch(texts)], self.eot_id, dtype)

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids if int(i) != self.eot_id])

    def to_json(self) -> str:
        return json.dumps({"kind": "bpe", "tokenizer": self._tok.to_str()})


def load_tokenizer(source: str | Path, option: str = "data.tokenizer") -> BPETokenizer:
    """An existing tokenizer: a `tokenizer.json` file (HF tokenizers), a GPT-2 `vocab.json` with `merges.txt`
    beside it, or a folder holding either (tokenizer.json first, as a HF model folder has both)."""
    from tokenizers import Tokenizer as HFTokenizer

    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            path = path / "tokenizer.json"
        elif all((path / name).is_file() for name in GPT2_FILES):
            path = path / "vocab.json"
        else:
            raise UserError(
                f"{option}: the folder '{source}' holds neither tokenizer.json nor GPT-2's "
                f"vocab.json + merges.txt; point it at a tokenizer file or such a folder"
            )
    if not path.is_file():
        raise UserError(
            f"{option}: '{source}' is neither byte, bpe nor an existing tokenizer file or folder "
            f"(tokenizer.json, or a folder with GPT-2's vocab.json + merges.txt)"
        )
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{option}: '{path}' is not a JSON tokenizer file ({err})") from None
    try:
        if isinstance(spec, dict) and "model" in spec:  # HF tokenizers' own format
            hf = HFTokenizer.from_str(json.dumps(spec))
        else:  # GPT-2's token -> id map; its merges are in merges.txt beside it
            hf = _gpt2_tokenizer(path, path.with_name("merges.txt"), option)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - the library's parse errors: the file is the user's to fix
        raise UserError(f"{option}: '{path}' could not be read as a tokenizer ({type(err).__name__}: {err})") from None
    if hf.token_to_id(EOT) is None:
        raise UserError(
            f"{option}: '{path}' has no {EOT} token, which the text layer puts between documents; "
            f"use a tokenizer that has it (GPT-2's does)"
        )
    return BPETokenizer(hf)


def _gpt2_tokenizer(vocab: Path, merges: Path, option: str):
    """GPT-2's byte-level BPE from its two files, built the way transformers' GPT2TokenizerFast builds it
    (ByteLevel pre-tokenizer without prefix space, ByteLevel decoder, <|endoftext|> a special token), so
    the ids are that tokenizer's."""
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers

    if not merges.is_file():
        raise UserError(f"{option}: '{vocab}' needs GPT-2's merges.txt beside it ({merges} does not exist)")
    tok = HFTokenizer(models.BPE.from_file(str(vocab), str(merges)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # Special: matched before pre-tokenization, so "<|endoftext|>" in a text is the one id, as in GPT-2.
    # An id the vocabulary already holds (GPT-2: 50256) is reused, not added.
    tok.add_special_tokens([EOT])
    return tok


def tokenizer_from_json(text: str) -> Tokenizer:
    spec = json.loads(text)
    if spec["kind"] == "byte":
        return ByteTokenizer()
    if spec["kind"] == "bpe":
        from tokenizers import Tokenizer as HFTokenizer

        return BPETokenizer(HFTokenizer.from_str(spec["tokenizer"]))
    raise ValueError(f"unknown tokenizer kind {spec['kind']!r}")
