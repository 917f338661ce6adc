"""Per-step overhead of `gen-lightning fit` for the nano GPT vs a plain nanoGPT-style PyTorch loop.

    python benchmarks/overhead_gpt.py [--repeats 5] [--warmup 10] [--steps 80] [--threads 1]

Both sides train the same model (nano: 4 layers, 4 heads, 128 wide, block 128, byte vocabulary 257,
fp32, no compile) on the same windows (the same TextDataModule and its seeded loader, batch 16) with
the same AdamW (decay on matrices only), the same warm-up/cosine LR schedule, gradient clipping at 1.0,
from the same seed:
  plain      a hand-written loop in nanoGPT's style: forward, loss, backward, clip, step, zero_grad,
             LR set per step, `loss.item()` printed every 10 steps (nanoGPT's log_interval);
  lightning  configs/trainer/cpu.yaml + configs/gpt/nano_stdlib.yaml through the project's CLI object
             with every default callback, the progress bar and the W&B logger (offline).
The two sides run in lockstep, 10 steps each in turn, inside each Lightning run (_overhead.py says why).
Printed: median ms/step of each side, the paired chunk ratios and the RATIO, their median (goal <= 1.02x), tokens/s.
About 4.5 minutes on 2 cores with the defaults (1 + 5 Lightning runs of 91 steps, each with 90 plain steps inside:
40 timed chunk pairs).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _overhead import lockstep_batches, machine, repeat_lockstep, report, run_lockstep, timed_chunks  # noqa: E402

from gen_lightning.data import TextDataModule  # noqa: E402
from gen_lightning.models.gpt import warmup_cosine  # noqa: E402
from gen_lightning.models.nets.transformer import GPT, GPTConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BATCH, BLOCK = 16, 128
# nano_stdlib.yaml's optimisation settings; the plain loop copies them.
LR, MIN_LR, WD, BETAS, WARMUP, CLIP, LOG_EVERY = 3e-3, 3e-4, 0.1, (0.9, 0.95), 20, 1.0, 10


def datamodule(cache_dir: str) -> TextDataModule:
    return TextDataModule(tokenizer="byte", block_size=BLOCK, batch_size=BATCH, cache_dir=cache_dir, seed=0)


def plain_steps(cache_dir: str, total: int) -> Iterator[None]:
    """nanoGPT's train.py loop, reduced to what this comparison needs (no DDP, no eval, no compile); one step per
    `next()` (set-up on the first call). `total`: the run's length, for the LR schedule (as the Lightning run's)."""
    torch.manual_seed(0)
    data = datamodule(cache_dir)
    data.prepare_data()
    data.setup("fit")
    model = GPT(GPTConfig.named("nano", block_size=BLOCK, vocab_size=257, dropout=0.0, bias=True))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": WD},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=LR,
        betas=BETAS,
    )
    step = 0
    while True:
        for x, y in data.train_dataloader():
            lr = LR * warmup_cosine(step, WARMUP, total, MIN_LR / LR)
            for group in optimizer.param_groups:
                group["lr"] = lr
            logits = model(x)
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step % LOG_EVERY == 0:
                loss_value = loss.item()  # nanoGPT prints the loss every log_interval steps
                assert math.isfinite(loss_value)
            step += 1
            yield


def lightning_with_plain(cache_dir: str, warmup: int, chunks: int) -> tuple[list, list]:
    total = lockstep_batches(warmup, LOG_EVERY, chunks)
    return run_lockstep(
        [
            "--config",
            str(ROOT / "configs/trainer/cpu.yaml"),
            "--config",
            str(ROOT / "configs/gpt/nano_stdlib.yaml"),
            "--data.block_size",
            str(BLOCK),
            "--data.batch_size",
            str(BATCH),
            "--data.cache_dir",
            cache_dir,
        ],
        plain_steps(cache_dir, total),
        warmup,
        LOG_EVERY,
        chunks,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument(
        "--steps", type=int, default=80, help="timed steps per repeat (warmup + steps < 99: no validation inside)"
    )
    parser.add_argument(
        "--warmup-repeats", type=int, default=1, help="rounds run first and not counted (one-off first-run costs)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both sides")
    parser.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "gen-lightning-bench-text"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chunks = timed_chunks(parser, args.steps, LOG_EVERY)
    datamodule(args.cache_dir).prepare_data()  # tokenize once, outside the timings
    timed = repeat_lockstep(
        lambda: lightning_with_plain(args.cache_dir, args.warmup, chunks),
        args.repeats,
        args.warmup_repeats,
        LOG_EVERY,
    )
    report(timed, goal=1.02)
    print(f"machine: {machine()}")
    for name, times in timed.items():
        print(f"tokens/s {name:>10}: {BATCH * BLOCK / statistics.median(wall for wall, _ in times):,.0f}")


if __name__ == "__main__":
    main()
