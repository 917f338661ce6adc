"""Documents -> one flat token file (each document's ids, then the end-of-text id), encoded in parallel.

A byte-level BPE is encoded by distinct pre-token (data/bpe_pieces.py: HF's own ids, ~12 MB per CPU-second on
code instead of HF's ~1.5-2, which its ByteLevel pre-tokenizer spends ~90% of). On top of that the
documents go to a pool of forked processes, one per core, in chunks of ~`CHUNK_BYTES`; each encodes its chunks
serially (TOKENIZERS_PARALLELISM=false: a thread pool must not be inherited across fork, and processes already use
every core) with its own pre-token cache, warmed by the first chunk, which the parent encodes before it forks; the
chunks are written in corpus order: the file is byte-identical to a serial run's. Byte tokenization needs no
tokenizer at all (numpy view of the UTF-8 bytes) and stays in-process.
The bar shows MB/s of UTF-8 text.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from typing import BinaryIO, Iterator, Optional, Sequence

import numpy as np

from gen_lightning.data.tokenizers import Tokenizer

CHUNK_BYTES = 1 << 19  # ~0.5 MB per task: a few tasks per worker on a 1 MB corpus, little pickling overhead
PARALLEL_MIN_BYTES = 1 << 21  # below 2 MB the pool's start-up (~0.1 s per process) is more than it saves

# What a forked worker inherits instead of receiving it pickled: the tokenizer and the documents themselves;
# a task is a range of document indices.
_worker_tok: Optional[Tokenizer] = None
_worker_docs: Sequence[str] = ()
_worker_dtype = "uint16"


def encode_documents(tok: Tokenizer, docs: Sequence[str], dtype: str) -> np.ndarray:
    """The token stream of `docs`: each document's ids followed by `tok.eot_id`."""
    return tok.encode_stream(list(docs), dtype)


def _encode_in_worker(span: tuple[int, int]) -> np.ndarray:
    return encode_documents(_worker_tok, _worker_docs[span[0] : span[1]], _worker_dtype)


def _chunks(sizes: Sequence[int]) -> Iterator[tuple[tuple[int, int], int]]:
    """Consecutive document ranges of about CHUNK_BYTES each, with their size in bytes."""
    start, size = 0, 0
    for i, n in enumerate(sizes):
        size += n
        if size >= CHUNK_BYTES:
            yield (start, i + 1), size
            start, size = i + 1, 0
    if start < len(sizes):
        yield (start, len(sizes)), size


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _fork_pool(tok: Tokenizer, docs: Sequence[str], dtype: str, workers: int):
    global _worker_tok, _worker_docs, _worker_dtype
    _worker_tok, _worker_docs, _worker_dtype = tok, docs, dtype
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # read by the forked children (see module docstring)
    try:
        return multiprocessing.get_context("fork").Pool(workers)  # forks every worker now
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM")
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous


def _forget_worker_state() -> None:
    global _worker_tok, _worker_docs
    _worker_tok, _worker_docs = None, ()


def write_tokens(
    tok: Tokenizer,
    docs: Sequence[str],
    out: BinaryIO,
    dtype: str,
    label: str,
    workers: Optional[int] = None,
    parallel_min_bytes: int = PARALLEL_MIN_BYTES,
) -> int:
    """Write the token stream of `docs` to `out`; returns the number of tokens written."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    sizes = [len(d.encode("utf-8")) for d in docs]
    workers = default_workers() if workers is None else workers
    parallel = (
        tok.kind != "byte"
        and workers > 1
        and sum(sizes) >= parallel_min_bytes
        and "fork" in multiprocessing.get_all_start_methods()
    )
    chunks = list(_chunks(sizes))
    first, pool = None, None
    if parallel and len(chunks) > 1:
        # The first chunk is encoded here before the fork, so that every worker inherits what it leaves behind: the
        # pre-tokens most documents share, already encoded, and the tokenizer's bare copy (bpe_pieces). Each worker
        # built both again before (~0.1 s of HF calls per process on the default corpus).
        (a, b), _ = chunks[0]
        first = encode_documents(tok, docs[a:b], dtype)
        # Forked before the progress bar starts its refresh thread: a child must not inherit a thread's held lock.
        pool = _fork_pool(tok, docs, dtype, workers)
    count = 0
    try:
        with Progress(
            TextColumn(f"tokenizing {label}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            transient=True,
        ) as progress:
            task = progress.add_task(label, total=sum(sizes))
            results = (
                itertools.chain([first], pool.imap(_encode_in_worker, [c for c, _ in chunks[1:]]))
                if pool is not None
                else (encode_documents(tok, docs[a:b], dtype) for (a, b), _ in chunks)
            )
            for arr, (_, size) in zip(results, chunks):  # imap keeps the corpus order
                out.write(arr.data)  # a contiguous array: no copy
                count += len(arr)
                progress.advance(task, size)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
            _forget_worker_state()
    return count


__all__ = ["encode_documents", "write_tokens"]
