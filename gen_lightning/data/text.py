"""TextDataModule: corpus -> tokenizer -> uint16/uint32 memmap -> windows.

nanoGPT's idea, made a DataModule: the corpus is tokenized once (in `prepare_data`, one process per
node) into flat binary token files; training reads random windows of `block_size + 1` tokens from a
memory map with no copies, validation reads consecutive non-overlapping windows.

Corpus: a file, a folder (every text file below it) or a glob (a leading `stdlib:` = inside the standard
library's folder, e.g. `stdlib:pydoc_data/topics.py`); by default the CPython standard library's own
`.py` sources (about 11 MB of real text on every machine that has Python).
Split: the documents in sorted path order are cut at `1 - val_fraction` of the characters (the
document holding the cut is split at a line break): train text first, validation text after.
Cache: `cache_dir/text-<key>/` where the key hashes the file list (paths, sizes, mtimes) and the
tokenizer settings; `meta.json` is written last, so a half-written cache is never reused.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import json
import os
import socket
import sysconfig
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from gen_lightning.data.base import EpochIndexSampler, GenDataModule
from gen_lightning.data.tokenizers import BPETokenizer, ByteTokenizer, Tokenizer, load_tokenizer, tokenizer_from_json
from gen_lightning.errors import UserError

CACHE_VERSION = 1


# -- corpus ---------------------------------------------------------------------------------------
def stdlib_files() -> list[Path]:
    """The CPython standard library's `.py` files, without its test suites and third-party packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"}
    return sorted(p for p in root.rglob("*.py") if not skip.intersection(p.relative_to(root).parts))


# A byte-order mark names the encoding (UTF-16 text is full of NUL bytes, so it is looked for first);
# UTF-32's marks begin with UTF-16's, so they come first. Without a mark: UTF-8.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_REPLACED = [0]  # bytes the decoder could not read, counted by the error handler below


def _replace_and_count(err: UnicodeDecodeError) -> tuple[str, int]:
    # errors="replace" with a count: Python's handlers do not say how many bytes they replaced.
    _REPLACED[0] += err.end - err.start
    return "\ufffd", err.end


codecs.register_error("gen_lightning_replace_and_count", _replace_and_count)


def text_encoding(head: bytes) -> Optional[str]:
    """The codec a file starting with `head` is read with; None for a binary file (git's rule: a NUL byte
    in the first 8 KB) that has no byte-order mark."""
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding
    return None if b"\0" in head else "utf-8"


def _looks_binary(path: Path) -> bool:
    with open(path, "rb") as f:
        return text_encoding(f.read(8192)) is None


def read_text(path: Path) -> tuple[str, int]:
    """The text of `path` (UTF-8, or the encoding its byte-order mark names) and how many undecodable bytes
    in it were replaced with U+FFFD."""
    raw = path.read_bytes()
    before = _REPLACED[0]
    text = raw.decode(text_encoding(raw[:8192]) or "utf-8", errors="gen_lightning_replace_and_count")
    return text, _REPLACED[0] - before


def corpus_report(files: list[Path], binary: list[Path], replaced: dict[Path, int]) -> Optional[str]:
    """The one line `prepare_data` prints when the corpus is not all clean text; None when it is."""
    if not binary and not replaced:
        return None

    def some(paths: list[Path]) -> str:
        return ", ".join(p.name for p in paths[:3]) + (", ..." if len(paths) > 3 else "")

    def count(n: int, what: str) -> str:
        return f"{n} {what}{'' if n == 1 else 's'}"

    parts = [f"corpus: {count(len(files), 'text file')} read"]
    if binary:
        parts.append(f"{count(len(binary), 'binary file')} skipped ({some(binary)})")
    if replaced:
        parts.append(
            f"{count(sum(replaced.values()), 'undecodable byte')} replaced with U+FFFD in "
            f"{count(len(replaced), 'file')} ({some(sorted(replaced))}); save text as UTF-8 (or with a "
            f"byte-order mark)"
        )
    return "; ".join(parts)


def resolve_corpus(corpus: Optional[str], skipped: Optional[list[Path]] = None) -> list[Path]:
    """The sorted list of text files `corpus` names; a clear UserError when there are none. The binary files
    left out are appended to `skipped`."""
    if corpus is None:
        files = stdlib_files()
        if not files:
            raise UserError("no standard-library sources found for the default corpus; set data.corpus to a text file")
        return files
    if corpus.startswith("stdlib:"):  # relative to this Python's standard library: a path valid on every machine
        corpus = str(Path(sysconfig.get_paths()["stdlib"]) / corpus[len("stdlib:") :])
    path = Path(corpus).expanduser()
    if any(ch in corpus for ch in "*?["):
        files = [Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()]
        if not files:
            raise UserError(f"data.corpus: the pattern '{corpus}' matches no files; check the pattern")
    elif path.is_file():
        files = [path]
    elif path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.parts)]
        if not files:
            raise UserError(f"data.corpus: the folder '{corpus}' holds no files; add text files or point elsewhere")
    else:
        raise UserError(f"data.corpus: '{corpus}' does not exist; give a text file, a folder or a glob")
    binary = sorted(p for p in files if _looks_binary(p))
    if skipped is not None:
        skipped.extend(binary)
    files = sorted(set(files) - set(binary))
    if not files or sum(p.stat().st_size for p in files) == 0:
        raise UserError(f"data.corpus: '{corpus}' is empty (no text in it); give a non-empty text file or folder")
    return files


def split_documents(docs: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Cut the document stream at (1 - val_fraction) of its characters, at a line break."""
    total = sum(len(d) for d in docs)
    cut = int(total * (1.0 - val_fraction))
    train, val, seen = [], [], 0
    for doc in docs:
        if seen + len(doc) <= cut:
            train.append(doc)
        elif seen >= cut:
            val.append(doc)
        else:
            at = doc.rfind("\n", 0, cut - seen) + 1 or (cut - seen)
            train.append(doc[:at])
            val.append(doc[at:])
        seen += len(doc)
    return [d for d in train if d], [d for d in val if d]


def _writer_id() -> str:
    """Names a temporary file per process: prepare_data runs once per *node*, so on a shared file system
    several nodes build the same cache at once, and a shared temporary name lets one replace another's."""
    return f"{socket.gethostname()}-{os.getpid()}"


# -- windows --------------------------------------------------------------------------------------


class _TokenFile:
    """A lazily opened memmap: opened in the process that reads it (DataLoader workers included)."""

    def __init__(self, path: Path, dtype: str, length: int) -> None:
        self.path, self.dtype, self.length = path, dtype, length
        self._arr: Optional[np.memmap] = None

    @property
    def array(self) -> np.memmap:
        if self._arr is None:
            self._arr = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.length,))
        return self._arr

    def window(self, start: int, size: int) -> torch.Tensor:
        return torch.from_numpy(self.array[start : start + size].astype(np.int64))

    def __getstate__(self):  # never pickle an open map into a worker
        return {"path": self.path, "dtype": self.dtype, "length": self.length, "_arr": None}


class RandomWindows(Dataset):
    """`num_samples` windows per epoch at seeded random offsets, drawn afresh every epoch.

    Index `epoch * num_samples + i` is window i of that epoch (EpochIndexSampler yields those indices), its
    offset a pure function of (seed, epoch, i): a resumed run reads the very same windows, and E epochs cover
    the fraction 1 - exp(-E * num_samples * block_size / tokens) of the tokens, as independent draws should
    (offsets drawn once replayed one set of windows every epoch: about a third of the corpus never appeared).
    nanoGPT draws per step; per epoch keeps an epoch a well-defined set of windows for the loader's state.
    """

    def __init__(self, tokens: _TokenFile, block_size: int, num_samples: int, seed: int) -> None:
        self.tokens, self.block_size, self.num_samples, self.seed = tokens, block_size, num_samples, seed
        self.high = tokens.length - block_size - 1
        self._epoch: Optional[int] = None
        self._offsets: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return self.num_samples

    def offsets(self, epoch: int) -> np.ndarray:
        """The epoch's window starts, drawn once per epoch and process (~1 ms per 100k windows)."""
        if epoch != self._epoch:
            self._offsets = np.random.default_rng([self.seed, epoch]).integers(0, self.high + 1, size=self.num_samples)
            self._epoch = epoch
        return self._offsets

    def __getitem__(self, index: int):
        epoch, i = divmod(int(index), self.num_samples)
        w = self.tokens.window(int(self.offsets(epoch)[i]), self.block_size + 1)
        return w[:-1], w[1:]


class SequentialWindows(Dataset):
    """Consecutive non-overlapping windows covering the split once: what perplexity is measured on."""

    def __init__(self, tokens: _TokenFile, block_size: int, max_windows: Optional[int] = None) -> None:
        self.tokens, self.block_size = tokens, block_size
        n = (tokens.length - 1) // block_size
        self.n = n if max_windows is None else min(n, max_windows)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        w = self.tokens.window(i * self.block_size, self.block_size + 1)
        return w[:-1], w[1:]


# -- the DataModule -------------------------------------------------------------------------------
class TextDataModule(GenDataModule):
    def __init__(
        self,
        corpus: Optional[str] = None,
        tokenizer: str = "byte",
        vocab_size: int = 4096,
        block_size: int = 128,
        train_samples: Optional[int] = None,
        val_windows: Optional[int] = None,
        max_chars: Optional[int] = None,
        cache_dir: str = "data/cache",
        batch_size: int = 32,
        val_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: Optional[bool] = None,
    ) -> None:
        """
        Args:
            corpus: text file, folder or glob; None = the CPython standard library sources.
            tokenizer: `byte` (257 ids), `bpe` (trained on the train split, `vocab_size` ids), or the path of an
                existing tokenizer: a Hugging Face tokenizer.json, GPT-2's vocab.json (merges.txt beside it), or
                a folder holding either (e.g. the GPT-2 folder given to model.init_from: its own token ids).
            vocab_size: size of the BPE vocabulary to train (`bpe` only; a loaded tokenizer has its own).
            block_size: tokens of context per training example.
            train_samples: random windows per epoch; default = train tokens // block_size.
            val_windows: cap on validation windows (None = the whole validation split).
            max_chars: read only this many characters of the corpus (quick experiments).
            cache_dir: where token files and the trained tokenizer are kept.
            batch_size: samples per batch on each process (the global batch is this times the processes).
            val_fraction: share held out for validation, between 0 and 1.
            seed: seed of the random training windows (fresh offsets each epoch from (seed, epoch)).
            num_workers: DataLoader worker processes per rank; 0 = load in the training process.
            pin_memory: page-locked batches for faster host-to-GPU copies; None = on exactly when CUDA is usable.
        """
        super().__init__(batch_size, val_fraction, seed, num_workers, pin_memory)
        if block_size < 1:
            raise UserError(f"data.block_size must be >= 1, got {block_size}")
        if tokenizer == "bpe" and not 257 <= vocab_size <= 2**32 - 1:
            raise UserError(f"data.vocab_size must be at least 257 for a byte-level BPE, got {vocab_size}")
        # A path: loaded now, so a bad file fails before any process starts and its size is known to the model.
        self.loaded_tokenizer = None if tokenizer in ("byte", "bpe") else load_tokenizer(tokenizer)
        self.corpus = corpus
        self.tokenizer_kind = tokenizer if self.loaded_tokenizer is None else "file"
        self.bpe_vocab_size = vocab_size
        self.block_size = block_size
        self.train_samples = train_samples
        self.val_windows = val_windows
        self.max_chars = max_chars
        self.cache_root = Path(cache_dir)
        # Resolve (and validate) the corpus now, so a bad path fails before any process starts.
        self.binary_files: list[Path] = []
        self.files = resolve_corpus(corpus, skipped=self.binary_files)
        self.tokenizer: Optional[Tokenizer] = ByteTokenizer() if tokenizer == "byte" else self.loaded_tokenizer

    @property
    def vocab_size(self) -> int:
        """The id range a model must cover; known before the tokenizer is trained."""
        if self.loaded_tokenizer is not None:
            return self.loaded_tokenizer.vocab_size
        return ByteTokenizer.vocab_size if self.tokenizer_kind == "byte" else self.bpe_vocab_size

    @property
    def cache_dir(self) -> Path:
        spec = {
            "version": CACHE_VERSION,
            "files": [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in self.files],
            "tokenizer": self.tokenizer_kind,
            "vocab_size": self.bpe_vocab_size if self.tokenizer_kind == "bpe" else None,
            "val_fraction": self.val_fraction,
            "max_chars": self.max_chars,
        }
        if self.loaded_tokenizer is not None:  # by content: an edited file gets a fresh cache, a moved one keeps it
            spec["tokenizer_sha1"] = hashlib.sha1(self.loaded_tokenizer.to_json().encode()).hexdigest()
        key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
        return self.cache_root / f"text-{key}"

    # -- prepare: tokenize once -------------------------------------------------------------------
    def prepare_data(self) -> None:
        cache = self.cache_dir
        if (cache / "meta.json").exists():
            return
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"data.cache_dir '{self.cache_root}' is not writable ({err}); choose another") from None
        docs, replaced = self._read_documents()
        report = corpus_report(self.files, self.binary_files, replaced)
        if report:
            print(report, flush=True)
        train_docs, val_docs = split_documents(docs, self.val_fraction)
        if not train_docs or not val_docs:
            raise UserError("data.corpus is too small to split into train and validation text; give more text")
        tok = self._build_tokenizer(train_docs)
        (cache / "tokenizer.json").write_text(tok.to_json())
        dtype = "uint16" if tok.vocab_size <= 2**16 else "uint32"
        counts = {
            split: self._write_tokens(tok, docs, cache / f"{split}.bin", dtype, split)
            for split, docs in (("train", train_docs), ("val", val_docs))
        }
        meta = {
            "dtype": dtype,
            "vocab_size": tok.vocab_size,
            "tokenizer": tok.kind,
            "eot_id": tok.eot_id,
            "train_tokens": counts["train"],
            "val_tokens": counts["val"],
            "files": len(self.files),
        }
        tmp = cache / f"meta.json.{_writer_id()}.tmp"
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, cache / "meta.json")  # the commit point of the cache

    def _read_documents(self) -> tuple[list[str], dict[Path, int]]:
        """The documents, and the number of undecodable bytes replaced in each file that had any."""
        docs, budget, replaced = [], self.max_chars, {}
        for path in self.files:
            text, bad_bytes = read_text(path)
            if bad_bytes:
                replaced[path] = bad_bytes
            if budget is not None:
                text = text[:budget]
                budget -= len(text)
            if text:
                docs.append(text)
            if budget is not None and budget <= 0:
                break
        return docs, replaced

    def _build_tokenizer(self, train_docs: list[str]) -> Tokenizer:
        if self.loaded_tokenizer is not None:
            return self.loaded_tokenizer
        if self.tokenizer_kind == "byte":
            return ByteTokenizer()
        # Trained on the train split only: validation text must not shape the vocabulary.
        return BPETokenizer.train(iter(train_docs), self.bpe_vocab_size)

    @staticmethod
    def _write_tokens(tok: Tokenizer, docs: list[str], path: Path, dtype: str, label: str) -> int:
        from gen_lightning.data.token_writer import write_tokens  # parallel encoding (see that module)

        tmp = path.with_name(f"{path.name}.{_writer_id()}.tmp")
        with open(tmp, "wb") as f:
            count = write_tokens(tok, docs, f, dtype, label)
        os.replace(tmp, path)
        return count

    # -- setup: open the maps ---------------------------------------------------------------------
    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        cache = self.cache_dir
        meta_path = cache / "meta.json"
        if not meta_path.exists():
            raise UserError(f"token cache '{cache}' is missing; run prepare_data first (or a shared cache_dir)")
        self.meta = json.loads(meta_path.read_text())
        self.tokenizer = tokenizer_from_json((cache / "tokenizer.json").read_text())
        train = _TokenFile(cache / "train.bin", self.meta["dtype"], self.meta["train_tokens"])
        val = _TokenFile(cache / "val.bin", self.meta["dtype"], self.meta["val_tokens"])
        for name, tokens in (("train", train), ("validation", val)):
            if tokens.length < self.block_size + 1:
                raise UserError(
                    f"the {name} split has {tokens.length} tokens, fewer than block_size + 1 = {self.block_size + 1}; "
                    f"lower data.block_size or give more text"
                )
        samples = self.train_samples or max(1, train.length // self.block_size)
        self.train_set = RandomWindows(train, self.block_size, samples, self.seed)
        self.val_set = SequentialWindows(val, self.block_size, self.val_windows)

    def train_sampler(self, dataset: Dataset):
        # Windows are random already: the order needs no shuffle, the epoch must reach the dataset.
        world, rank = self._shards()
        return EpochIndexSampler(dataset, self.seed, num_replicas=world, rank=rank)
