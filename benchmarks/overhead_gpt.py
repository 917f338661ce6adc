"""Per-step overhead of `gen-lightning fit` for the nano GPT vs a plain nanoGPT-style PyTorch loop.

    python benchmarks/overhead_gpt.py [--repeats 3] [--warmup 10] [--steps 60] [--threads 1]

Both sides train the same model (nano: 4 layers, 4 heads, 128 wide, block 128, byte vocabulary 257,
fp32, no compile) on the same windows (the same TextDataModule and its seeded loader, batch 16) with
the same AdamW (decay on matrices only), the same warm-up/cosine LR schedule, gradient clipping at 1.0,
from the same seed:
  plain      a hand-written loop in nanoGPT's style: forward, loss, backward, clip, step, zero_grad,
             LR set per step, `loss.item()` printed every 10 steps (nanoGPT's log_interval);
  lightning  configs/trainer/cpu.yaml + configs/gpt/nano_stdlib.yaml through the project's CLI object
             with every default callback, the progress bar and the W&B logger (offline).
Printed: median ms/step of each side over interleaved repeats, the ratio (goal <= 1.02x) and tokens/s.
About 2 minutes on 2 cores with the defaults (4 minutes with --repeats 7 --steps 40), a warm-up round included.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _overhead import StepClock, interleave, machine, report, run_cli_fit  # noqa: E402

from gen_lightning.data import TextDataModule  # noqa: E402
from gen_lightning.models.gpt import warmup_cosine  # noqa: E402
from gen_lightning.models.nets.transformer import GPT, GPTConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BATCH, BLOCK = 16, 128
# nano_stdlib.yaml's optimisation settings; the plain loop copies them.
LR, MIN_LR, WD, BETAS, WARMUP, CLIP, LOG_EVERY = 3e-3, 3e-4, 0.1, (0.9, 0.95), 20, 1.0, 10


def datamodule(cache_dir: str) -> TextDataModule:
    return TextDataModule(tokenizer="byte", block_size=BLOCK, batch_size=BATCH, cache_dir=cache_dir, seed=0)


def plain_loop(cache_dir: str, warmup: int, steps: int) -> StepClock:
    """nanoGPT's train.py loop, reduced to what this comparison needs (no DDP, no eval, no compile)."""
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
    total = warmup + steps + 1
    clock = StepClock(warmup, steps)
    for step, (x, y) in enumerate(data.train_dataloader()):
        clock.tick(step)
        if step == total:
            break
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
    return clock


def lightning_fit(cache_dir: str, warmup: int, steps: int) -> StepClock:
    return run_cli_fit(
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
        warmup,
        steps,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per repeat (< 99: no validation inside)")
    parser.add_argument(
        "--warmup-repeats", type=int, default=1, help="rounds run first and not counted (one-off first-run costs)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both sides")
    parser.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "gen-lightning-bench-text"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    datamodule(args.cache_dir).prepare_data()  # tokenize once, outside the timings
    wall, cpu = interleave(
        {
            "plain": lambda: plain_loop(args.cache_dir, args.warmup, args.steps),
            "lightning": lambda: lightning_fit(args.cache_dir, args.warmup, args.steps),
        },
        args.repeats,
        args.warmup_repeats,
    )
    report(wall, "plain", "lightning", goal=1.02, what="wall")
    report(cpu, "plain", "lightning", goal=1.02, what="CPU (this process)")
    print(f"machine: {machine()}")
    tokens = BATCH * BLOCK
    for name, ts in wall.items():
        print(f"tokens/s {name:>10}: {tokens / statistics.median(ts):,.0f}")


if __name__ == "__main__":
    main()
