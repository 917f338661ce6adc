"""Tokenization speed of the text layer's token writer on the default corpus (the CPython standard library).

    python benchmarks/tokenize_speed.py [--mb 0] [--repeats 2] [--vocab 4096]

The train split of the default corpus as TextDataModule prepares it (documents in path order, one BPE with
`--vocab` ids trained on them first, not timed), written by gen_lightning.data.token_writer:
  byte            the byte tokenizer (in-process, numpy)                        goal >= 40 MB/s
  bpe hf          HF tokenizers' encode_batch in this process (the writer before data/bpe_pieces.py)
  bpe serial      by distinct pre-token (data/bpe_pieces.py), in this process
  bpe pool        the same chunks in a pool of forked processes, one per core    goal >= 10 MB/s on 2 cores
The three BPE token files must be identical (checked: the exit status says so).
Interleaved repeats, median; MB = 2**20 bytes of UTF-8 text. Prints MB/s of wall time and MB per CPU-second
(this process + its workers): on a shared machine the second is what the code costs, the first what it got.
`--mb N` uses the first N MB only (0 = the whole split). About 1-2 minutes on 2 idle cores.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time

from gen_lightning.data import token_writer
from gen_lightning.data.text import TextDataModule, split_documents
from gen_lightning.data.bpe_pieces import PieceEncoder
from gen_lightning.data.tokenizers import BPETokenizer, ByteTokenizer


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=4096)
    args = parser.parse_args()

    data = TextDataModule(tokenizer="bpe", vocab_size=args.vocab)
    docs, _ = data._read_documents()
    train, _ = split_documents(docs, data.val_fraction)
    if args.mb:
        budget, docs = int(args.mb * 2**20), []
        for d in train:
            if budget <= 0:
                break
            docs.append(d[:budget])
            budget -= len(d[:budget].encode())
        train = docs
    size_mb = sum(len(d.encode()) for d in train) / 2**20
    t0 = time.perf_counter()
    bpe = BPETokenizer.train(iter(train), args.vocab)
    train_s = time.perf_counter() - t0
    workers = token_writer.default_workers()
    hf_only = BPETokenizer(bpe._tok)
    hf_only._pieces = None  # encode_stream falls back to HF's encode_batch: the writer as it was
    sides = {
        "byte": (ByteTokenizer(), 1),
        "bpe hf": (hf_only, 1),
        "bpe serial": (bpe, 1),
        f"bpe pool x{workers}": (bpe, workers),
    }
    print(
        f"machine: {os.cpu_count()} cores ({workers} usable), load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}; {len(train):,} documents, {size_mb:.1f} MB; "
        f"BPE {args.vocab} ids trained in {train_s:.1f} s (not timed)"
    )
    wall: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    outputs: dict[str, bytes] = {}
    for _ in range(args.repeats):
        for name, (tok, n) in sides.items():
            out = io.BytesIO()
            w0, c0 = time.perf_counter(), _cpu()
            if tok is bpe:
                bpe._pieces = PieceEncoder(bpe._tok)  # each repeat starts with an empty pre-token cache
            token_writer.write_tokens(tok, train, out, "uint16", name, workers=n)
            w1, c1 = time.perf_counter(), _cpu()
            wall[name].append(size_mb / (w1 - w0))
            cpu[name].append(size_mb / max(c1 - c0, 1e-9))
            outputs[name] = out.getvalue()
    if not outputs["bpe hf"] == outputs["bpe serial"] == outputs[f"bpe pool x{workers}"]:
        sys.exit("the BPE token files differ")
    for name in sides:
        print(
            f"{name:>13}: median {statistics.median(wall[name]):7.2f} MB/s wall, "
            f"{statistics.median(cpu[name]):7.2f} MB per CPU-s  ({', '.join(f'{x:.2f}' for x in wall[name])})"
        )
    pool, hf = f"bpe pool x{workers}", statistics.median(wall["bpe hf"])
    print(
        f"RATIO bpe serial/hf = {statistics.median(wall['bpe serial']) / hf:.2f}x, pool/hf = "
        f"{statistics.median(wall[pool]) / hf:.2f}x wall (the three token files identical); load average at the end "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )


if __name__ == "__main__":
    main()
