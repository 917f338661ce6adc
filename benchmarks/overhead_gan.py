"""Per-step overhead of `gen-lightning fit` for the DCGAN on digits vs a plain PyTorch loop.

    python benchmarks/overhead_gan.py [--repeats 12] [--warmup 5] [--steps 80] [--threads 1]

Both sides train the same nets (gen_lightning.models.nets.gan_nets, dcgan, 28x28, width 64, batch norm
in D) on the same batches (ImageDataModule digits, its seeded loader, batch 16) with the same two Adam
optimizers (2e-4, betas 0.5/0.999) and the non-saturating loss, from the same seed. One step = one
batch = one D step (fake from G under no_grad) + one G step (D frozen, as Lightning's
`toggled_optimizer` does):
  plain      the loop of PyTorch's DCGAN example, with D frozen during the G step; losses read with
             `.item()` every 10 batches;
  lightning  configs/trainer/cpu.yaml + configs/gan/dcgan_digits.yaml through the project's CLI object
             (GANModule, manual optimization), every default callback, progress bar, W&B offline.
The two sides run in lockstep, 10 steps each in turn, inside each Lightning run (_overhead.py says why).
Printed: median ms/step of each side, the paired chunk ratios and the RATIO, their median (goal <= 1.05x, issue 15).
About 2.1 minutes on 2 cores with the defaults (1 + 12 Lightning runs of 86 batches, each started through the CLI,
each with 85 plain steps inside: 96 timed chunk pairs). Single chunk pairs scatter by about ±5% on a shared machine
(quartiles); the median of 56-96 pairs still moved between 1.046 and 1.073 from one run to the next of the same code
(benchmarks/README.md §6).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Iterator

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _overhead import machine, repeat_lockstep, report, run_lockstep, timed_chunks  # noqa: E402

from gen_lightning.data import ImageDataModule  # noqa: E402
from gen_lightning.models.gan_losses import discriminator_loss, generator_loss  # noqa: E402
from gen_lightning.models.nets.gan_nets import build_gan_nets  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BATCH, LATENT, LR, BETAS, LOG_EVERY = 16, 100, 2e-4, (0.5, 0.999), 10


def plain_steps() -> Iterator[None]:
    """The plain loop, one step per `next()`: fetch a batch, D step, G step (set-up on the first call)."""
    torch.manual_seed(0)
    data = ImageDataModule("digits", image_size=28, batch_size=BATCH, seed=0)
    data.prepare_data()
    data.setup("fit")
    generator, discriminator = build_gan_nets("dcgan", (1, 28, 28), LATENT, 64, 0, "batch")
    opt_g = torch.optim.Adam(generator.parameters(), lr=LR, betas=BETAS)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=LR, betas=BETAS)
    step = 0
    while True:
        for real, _ in data.train_dataloader():
            # D step: G's output is a constant here.
            with torch.no_grad():
                fake = generator(torch.randn(real.shape[0], LATENT), None)
            d_loss = discriminator_loss("nonsaturating", discriminator(real, None), discriminator(fake, None))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            # G step: D's weights are frozen, its graph still carries the gradient to G.
            discriminator.requires_grad_(False)
            g_loss = generator_loss(
                "nonsaturating", discriminator(generator(torch.randn(real.shape[0], LATENT), None), None)
            )
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            discriminator.requires_grad_(True)
            if step % LOG_EVERY == 0:
                assert math.isfinite(d_loss.item() + g_loss.item())
            step += 1
            yield


def lightning_with_plain(warmup: int, chunks: int) -> tuple[list, list]:
    # global_step counts both optimizers' steps: 2 per batch (docs/gan.md).
    return run_lockstep(
        [
            "--config",
            str(ROOT / "configs/trainer/cpu.yaml"),
            "--config",
            str(ROOT / "configs/gan/dcgan_digits.yaml"),
            "--data.batch_size",
            str(BATCH),
        ],
        plain_steps(),
        warmup,
        LOG_EVERY,
        chunks,
        batches_per_step=2,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--steps", type=int, default=80, help="timed batches per repeat (< 90: no sample grid or validation inside)"
    )
    parser.add_argument(
        "--warmup-repeats", type=int, default=1, help="rounds run first and not counted (one-off first-run costs)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both sides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chunks = timed_chunks(parser, args.steps, LOG_EVERY)
    timed = repeat_lockstep(
        lambda: lightning_with_plain(args.warmup, chunks), args.repeats, args.warmup_repeats, LOG_EVERY
    )
    report(timed, goal=1.05)
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
