"""PairedTextDataModule: source -> target text pairs for encoder-decoder models.

Input: JSONL files (one `{"source": ..., "target": ...}` object per line) or TSV files (`source<TAB>target`
per line; literal text, so use JSONL for text with tabs or line breaks). Without files: the bundled task,
code summarisation on the CPython standard library (data/code_summaries.py).
Split: `val_file`, else the last `val_fraction` of `train_file`'s pairs (the bundled task: by module).
Tokenizer: one for both sides, `byte` (257 ids) or `bpe` trained on both sides of the train split only.
Lengths: a side longer than `max_source_len` / `max_target_len` tokens is an error naming the pair, or with
`truncate: true` is cut to the limit (how many were cut is in meta.json).
Cache: tokenized once (in `prepare_data`, one process per node) into `cache_dir/paired-<key>/`:
`tokenizer.json`, `{train,val}.{source,target}.bin` (the ids of all pairs back to back, uint16 or uint32),
`{train,val}.offsets.npy` (where each pair starts) and `meta.json`, written last: a half-written cache is
never reused. The key hashes the inputs (paths, sizes, mtimes) and every setting that changes the tokens.
Batches: length-bucketed, each rank its own share, padded (data/buckets.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

from gen_lightning.data.base import GenDataModule
from gen_lightning.data.buckets import BucketBatchSampler, PadPairs
from gen_lightning.data.code_summaries import Pair, stdlib_code_summaries
from gen_lightning.data.text import _TokenFile, _writer_id, stdlib_files
from gen_lightning.data.tokenizers import BPETokenizer, ByteTokenizer, Tokenizer, tokenizer_from_json
from gen_lightning.errors import UserError

CACHE_VERSION = 1
FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".tsv": "tsv", ".tab": "tsv"}


# -- reading pairs --------------------------------------------------------------------------------
def detect_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    if path.suffix.lower() not in FORMATS:
        raise UserError(f"'{path}': cannot tell JSONL from TSV by the name; set data.file_format jsonl or tsv")
    return FORMATS[path.suffix.lower()]


def _checked(source: str, target: str, origin: str) -> Pair:
    if not source.strip():
        raise UserError(f"{origin}: empty source; give it text or remove the line")
    if not target.strip():
        raise UserError(f"{origin}: empty target; give it text or remove the line")
    return Pair(source, target, origin)


def read_pairs(path: Path, fmt: str) -> list[Pair]:
    """Every pair of a JSONL or TSV file; the first bad line is a UserError naming file and line."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            origin = f"{path}:{n}"
            if not line.strip():
                continue  # blank lines (a trailing newline) carry nothing
            if fmt == "tsv":
                columns = line.rstrip("\r\n").split("\t")
                if len(columns) != 2:
                    raise UserError(
                        f"{origin}: {len(columns)} tab-separated columns, expected 2 (source<TAB>target); "
                        f"fix the line, or use JSONL for text that holds tabs"
                    )
                pairs.append(_checked(columns[0], columns[1], origin))
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(
                    f"{origin}: not valid JSON ({err.msg}); each line must be one object "
                    f'{{"source": ..., "target": ...}}'
                ) from None
            if not isinstance(record, dict):
                raise UserError(
                    f'{origin}: a JSON {type(record).__name__}, expected an object {{"source": ..., "target": ...}}'
                )
            for key in ("source", "target"):
                if key not in record:
                    raise UserError(f'{origin}: no "{key}" field; every line needs "source" and "target"')
                if not isinstance(record[key], str):
                    raise UserError(f'{origin}: "{key}" is a {type(record[key]).__name__}, expected a string')
            pairs.append(_checked(record["source"], record["target"], origin))
    if not pairs:
        raise UserError(f"'{path}' holds no pairs; give a file with one pair per line")
    return pairs


def _input_file(option: str, value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        raise UserError(f"data.{option}: '{value}' does not exist; give a JSONL or TSV file of pairs")
    return path


# -- tokens ---------------------------------------------------------------------------------------
class TokenPairs(Dataset):
    """Pair i = (source ids, target ids) from the cache. Indexed with a list of indices, it returns that
    batch's pairs: BucketBatchSampler yields batches and the loader has no batch_size of its own."""

    def __init__(self, source: _TokenFile, target: _TokenFile, offsets: np.ndarray) -> None:
        self.source, self.target, self.offsets = source, target, offsets  # offsets [N + 1, 2]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets, axis=0)  # [N, 2] source and target lengths

    def pair(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        (s0, t0), (s1, t1) = self.offsets[i], self.offsets[i + 1]
        return self.source.window(int(s0), int(s1 - s0)), self.target.window(int(t0), int(t1 - t0))

    def __getitem__(self, index):
        if isinstance(index, (list, tuple)):
            return [self.pair(i) for i in index]
        return self.pair(index)

    def truncated(self, n: Optional[int]) -> "TokenPairs":
        """The first n pairs (all when n is None)."""
        return self if n is None or n >= len(self) else TokenPairs(self.source, self.target, self.offsets[: n + 1])


# -- the DataModule -------------------------------------------------------------------------------
class PairedTextDataModule(GenDataModule):
    def __init__(
        self,
        train_file: Optional[str] = None,
        val_file: Optional[str] = None,
        file_format: Literal["auto", "jsonl", "tsv"] = "auto",
        tokenizer: Literal["byte", "bpe"] = "byte",
        vocab_size: int = 4096,
        max_source_len: int = 256,
        max_target_len: int = 64,
        truncate: bool = False,
        bucket_batches: int = 50,
        max_train_pairs: Optional[int] = None,
        max_val_pairs: Optional[int] = None,
        cache_dir: str = "data/cache",
        batch_size: int = 32,
        val_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: Optional[bool] = None,
    ) -> None:
        """
        Args:
            train_file: JSONL or TSV file of pairs; None = the bundled code-summarisation task on the stdlib.
            val_file: validation pairs; None = the last val_fraction of train_file's pairs.
            file_format: `jsonl`, `tsv`, or `auto` (by the file name: .jsonl/.json/.ndjson, .tsv/.tab).
            tokenizer: `byte` (257 ids) or `bpe` (trained on both sides of the train split, `vocab_size` ids).
            vocab_size: size of the BPE vocabulary (ignored for `byte`).
            max_source_len: longest source in tokens; a longer one is an error unless `truncate`.
            max_target_len: longest target in tokens (the stop token not counted); same rule.
            truncate: cut sides longer than their limit instead of stopping with an error.
            bucket_batches: batches per length bucket in training (larger: less padding, less random batches).
            max_train_pairs: use only the first this many training pairs (quick experiments).
            max_val_pairs: use only the first this many validation pairs.
            cache_dir: where the token files and the trained tokenizer are kept.
            batch_size: samples per batch on each process (the global batch is this times the processes).
            val_fraction: share of train_file's pairs (the last ones) held out for validation when there is no val_file.
            seed: seed of the training batches' shuffling (length buckets and their order).
            num_workers: DataLoader worker processes per rank; 0 = load in the training process.
            pin_memory: page-locked batches for faster host-to-GPU copies; None = on exactly when CUDA is usable.
        """
        super().__init__(batch_size, val_fraction, seed, num_workers, pin_memory)
        if max_source_len < 1 or max_target_len < 1:
            raise UserError(
                f"data.max_source_len and data.max_target_len must be >= 1, got {max_source_len}, {max_target_len}"
            )
        if tokenizer == "bpe" and not 257 <= vocab_size <= 2**32 - 1:
            raise UserError(f"data.vocab_size must be at least 257 for a byte-level BPE, got {vocab_size}")
        if bucket_batches < 1:
            raise UserError(f"data.bucket_batches must be >= 1, got {bucket_batches}")
        self.tokenizer_kind, self.bpe_vocab_size = tokenizer, vocab_size
        self.max_source_len, self.max_target_len, self.truncate = max_source_len, max_target_len, truncate
        self.bucket_batches, self.max_train_pairs, self.max_val_pairs = bucket_batches, max_train_pairs, max_val_pairs
        self.cache_root = Path(cache_dir)
        # Read and check the files now: a bad line fails before any process starts or anything is written.
        self.files: list[Path] = []
        self._pairs: Optional[tuple[list[Pair], list[Pair]]] = None
        if train_file is None:
            if val_file is not None:
                raise UserError("data.val_file needs a data.train_file (the bundled task has its own split)")
        else:
            train_path = _input_file("train_file", train_file)
            train = read_pairs(train_path, detect_format(train_path, file_format))
            self.files = [train_path]
            if val_file is not None:
                val_path = _input_file("val_file", val_file)
                val = read_pairs(val_path, detect_format(val_path, file_format))
                self.files.append(val_path)
            else:
                cut = len(train) - max(1, round(len(train) * val_fraction))
                if cut < 1:
                    raise UserError(
                        f"'{train_file}' has {len(train)} pair(s): too few to split off validation; "
                        f"give more pairs or a data.val_file"
                    )
                train, val = train[:cut], train[cut:]
            self._pairs = (train, val)
        self.tokenizer: Optional[Tokenizer] = ByteTokenizer() if tokenizer == "byte" else None

    @property
    def vocab_size(self) -> int:
        """The id range a model must cover; known before the tokenizer is trained."""
        return ByteTokenizer.vocab_size if self.tokenizer_kind == "byte" else self.bpe_vocab_size

    @property
    def cache_dir(self) -> Path:
        files = self.files or stdlib_files()
        spec = {
            "version": CACHE_VERSION,
            "task": "files" if self.files else "stdlib-code-summaries",
            "files": [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files],
            "val_file": len(self.files) == 2,
            "tokenizer": self.tokenizer_kind,
            "vocab_size": self.bpe_vocab_size if self.tokenizer_kind == "bpe" else None,
            "max_len": [self.max_source_len, self.max_target_len, self.truncate],
            "val_fraction": self.val_fraction,
        }
        key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
        return self.cache_root / f"paired-{key}"

    # -- prepare: tokenize once, check every length before writing anything ----------------------
    def prepare_data(self) -> None:
        cache = self.cache_dir
        if (cache / "meta.json").exists():
            return
        summary: dict = {}
        if self._pairs is not None:
            train, val = self._pairs
        else:
            train, val, summary = stdlib_code_summaries(self.val_fraction)
            summary = {"modules": summary["modules"], "val_modules": len(summary["val_modules"])}
        tok = self._build_tokenizer(train)
        encoded = {split: self._encode(tok, pairs, split) for split, pairs in (("train", train), ("val", val))}
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"data.cache_dir '{self.cache_root}' is not writable ({err}); choose another") from None
        (cache / "tokenizer.json").write_text(tok.to_json())
        dtype = "uint16" if tok.vocab_size <= 2**16 else "uint32"
        meta = {"dtype": dtype, "vocab_size": tok.vocab_size, "tokenizer": tok.kind, "eot_id": tok.eot_id, **summary}
        for split, (sources, targets, truncated) in encoded.items():
            offsets = np.zeros((len(sources) + 1, 2), dtype=np.int64)
            offsets[1:, 0] = np.cumsum([len(s) for s in sources])
            offsets[1:, 1] = np.cumsum([len(t) for t in targets])
            for side, ids in (("source", sources), ("target", targets)):
                _write(
                    cache / f"{split}.{side}.bin",
                    lambda f, ids=ids: np.fromiter((i for row in ids for i in row), dtype=dtype).tofile(f),
                )
            _write(cache / f"{split}.offsets.npy", lambda f, offsets=offsets: np.save(f, offsets))
            meta[f"{split}_pairs"] = len(sources)
            meta[f"{split}_truncated"] = truncated
        _write(cache / "meta.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))  # the commit point

    def _build_tokenizer(self, train: list[Pair]) -> Tokenizer:
        if self.tokenizer_kind == "byte":
            return ByteTokenizer()
        # Both sides of the train split: one vocabulary for code and English; validation text is not seen.
        return BPETokenizer.train(iter([p.source for p in train] + [p.target for p in train]), self.bpe_vocab_size)

    def _encode(self, tok: Tokenizer, pairs: list[Pair], split: str):
        sources = tok.encode_batch([p.source for p in pairs])
        targets = tok.encode_batch([p.target for p in pairs])
        truncated = {"source": 0, "target": 0}
        for side, rows, limit in (("source", sources, self.max_source_len), ("target", targets, self.max_target_len)):
            long = [i for i, ids in enumerate(rows) if len(ids) > limit]
            if long and not self.truncate:
                first = long[0]
                more = f" (and {len(long) - 1} more {split} pairs)" if len(long) > 1 else ""
                raise UserError(
                    f"{pairs[first].origin}: the {side} is {len(rows[first])} tokens, longer than "
                    f"data.max_{side}_len {limit}{more}; raise data.max_{side}_len or set data.truncate true"
                )
            for i in long:
                rows[i] = rows[i][:limit]
            truncated[side] = len(long)
        return sources, targets, truncated

    # -- setup: open the token files --------------------------------------------------------------
    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        cache = self.cache_dir
        if not (cache / "meta.json").exists():
            raise UserError(f"token cache '{cache}' is missing; run prepare_data first (or a shared cache_dir)")
        self.meta = json.loads((cache / "meta.json").read_text())
        self.tokenizer = tokenizer_from_json((cache / "tokenizer.json").read_text())
        dtype = self.meta["dtype"]
        sets = {}
        for split in ("train", "val"):
            offsets = np.load(cache / f"{split}.offsets.npy")
            sets[split] = TokenPairs(
                _TokenFile(cache / f"{split}.source.bin", dtype, int(offsets[-1, 0])),
                _TokenFile(cache / f"{split}.target.bin", dtype, int(offsets[-1, 1])),
                offsets,
            )
        self.train_set = sets["train"].truncated(self.max_train_pairs)
        self.val_set = sets["val"].truncated(self.max_val_pairs)

    # -- loaders: length buckets, each rank its share --------------------------------------------
    def _pair_loader(self, dataset: Optional[TokenPairs], train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not been called")
        trainer = self.trainer
        ranks, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = BucketBatchSampler(
            dataset.lengths,
            self.batch_size,
            num_replicas=ranks,
            rank=rank,
            train=train,
            seed=self.seed,
            bucket_batches=self.bucket_batches,
            split="training" if train else "validation",
        )
        return StatefulDataLoader(
            dataset,
            batch_size=None,  # the sampler yields whole batches
            sampler=sampler,
            collate_fn=PadPairs(self.tokenizer.eot_id),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),  # see GenDataModule._loader
        )

    def train_dataloader(self) -> DataLoader:
        return self._pair_loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._pair_loader(self.val_set, train=False)


def _write(path: Path, write) -> None:
    """Write through a temporary file of this process and rename: readers never see half a file."""
    tmp = path.with_name(f"{path.name}.{_writer_id()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)
