"""Text data path: window sampling (memmap vs a naive Python-list baseline) and tokenization speed.

    python benchmarks/text_loader.py [--batches 300] [--repeats 3] [--mb 4]

1. Tokens/s delivered as training batches [B, T] (batch 16, block 128) by
   memmap     gen_lightning.data.text's RandomWindows over the uint16 token file (nanoGPT's idea: a
              window is a slice of a memory map, cast to int64), collated by the project's DataLoader;
   naive      the common baseline: the whole token stream held as a Python list, each window built
              with `torch.tensor(tokens[i:i + T + 1])`, same offsets, same DataLoader and collation.
   Both read the same windows; interleaved repeats, median, ratio memmap/naive (higher = faster).
2. Tokenization throughput in MB/s of UTF-8 text for the byte tokenizer and the BPE path (HF
   `tokenizers`, byte-level BPE with 4096 ids trained on the same text, `encode_batch` as the
   DataModule's prepare_data uses it), on the first `--mb` MB of the CPython standard library sources.
About 1 minute on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _overhead import machine  # noqa: E402

from gen_lightning.data.text import RandomWindows, TextDataModule, _TokenFile, stdlib_files  # noqa: E402
from gen_lightning.data.tokenizers import BPETokenizer, ByteTokenizer  # noqa: E402

BATCH, BLOCK = 16, 128


class ListWindows(Dataset):
    """The naive baseline: tokens as a Python list, every window a fresh `torch.tensor(list)`."""

    def __init__(self, tokens: list[int], offsets: np.ndarray, block_size: int) -> None:
        self.tokens, self.offsets, self.block_size = tokens, offsets, block_size

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int):
        start = int(self.offsets[i])
        w = torch.tensor(self.tokens[start : start + self.block_size + 1], dtype=torch.long)
        return w[:-1], w[1:]


def tokens_per_second(dataset: Dataset, batches: int) -> float:
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=False, drop_last=True)
    start = time.perf_counter()
    seen = 0
    for i, (x, _) in enumerate(loader):
        seen += x.numel()
        if i + 1 == batches:
            break
    return seen / (time.perf_counter() - start)


def window_benchmark(cache_dir: str, batches: int, repeats: int) -> None:
    data = TextDataModule(tokenizer="byte", block_size=BLOCK, batch_size=BATCH, cache_dir=cache_dir)
    data.prepare_data()
    data.setup("fit")
    memmap_set: RandomWindows = data.train_set
    tokens: _TokenFile = memmap_set.tokens
    as_list = tokens.array.tolist()  # what the naive baseline holds in memory
    naive_set = ListWindows(as_list, memmap_set.offsets(0), BLOCK)  # epoch 0's windows, read by both
    # Same windows on both sides: a check that could fail, not only a timing.
    assert all(torch.equal(memmap_set[i][0], naive_set[i][0]) for i in range(8))
    results: dict[str, list[float]] = {"memmap": [], "naive": []}
    for _ in range(repeats):
        results["memmap"].append(tokens_per_second(memmap_set, batches))
        results["naive"].append(tokens_per_second(naive_set, batches))
    med = {k: statistics.median(v) for k, v in results.items()}
    print(
        f"windows: {tokens.length:,} train tokens (uint16 memmap {tokens.length * 2 / 2**20:.1f} MiB; "
        f"as a Python list ~{tokens.length * 8 / 2**20:.0f} MiB of pointers plus int objects)"
    )
    for k, v in results.items():
        print(f"  {k:>7}: median {med[k]:>12,.0f} tokens/s (min {min(v):,.0f}, max {max(v):,.0f}, {len(v)} repeats)")
    print(f"RATIO windows memmap/naive = {med['memmap'] / med['naive']:.2f}x tokens/s")


def read_text(megabytes: float) -> str:
    budget, parts = int(megabytes * 2**20), []
    for path in stdlib_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        budget -= len(text.encode("utf-8"))
        if budget <= 0:
            break
    return "".join(parts)


def tokenizer_benchmark(megabytes: float, repeats: int) -> None:
    text = read_text(megabytes)
    docs = text.split("\n\n")  # many documents, as prepare_data feeds them in batches
    size_mb = len(text.encode("utf-8")) / 2**20
    start = time.perf_counter()
    bpe = BPETokenizer.train(iter(docs), 4096)
    train_s = time.perf_counter() - start
    byte = ByteTokenizer()
    chunk = 64  # documents per encode_batch call, as in TextDataModule._write_tokens
    speeds: dict[str, list[float]] = {"byte": [], "bpe": []}
    counts = {}
    for _ in range(repeats):
        for name, tok in (("byte", byte), ("bpe", bpe)):
            start = time.perf_counter()
            n = sum(len(ids) for i in range(0, len(docs), chunk) for ids in tok.encode_batch(docs[i : i + chunk]))
            speeds[name].append(size_mb / (time.perf_counter() - start))
            counts[name] = n
    print(
        f"tokenization of {size_mb:.1f} MB of stdlib sources ({len(docs):,} documents, torch threads "
        f"{torch.get_num_threads()}, RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'default')}):"
    )
    for name, v in speeds.items():
        print(
            f"  {name:>5}: median {statistics.median(v):6.2f} MB/s, {counts[name]:,} tokens "
            f"({size_mb * 2**20 / counts[name]:.2f} bytes/token)"
        )
    print(f"  BPE training (4096 ids) on the same text: {train_s:.2f} s")
    print(
        f"RATIO tokenization bpe/byte = {statistics.median(speeds['bpe']) / statistics.median(speeds['byte']):.2f}x MB/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=300, help="batches read per repeat and side")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mb", type=float, default=4.0, help="MB of text for the tokenizer benchmark")
    parser.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "gen-lightning-bench-text"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    window_benchmark(args.cache_dir, args.batches, args.repeats)
    tokenizer_benchmark(args.mb, args.repeats)
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
