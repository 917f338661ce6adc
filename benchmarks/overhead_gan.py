"""Per-step overhead of `gen-lightning fit` for the DCGAN on digits vs a plain PyTorch loop.

    python benchmarks/overhead_gan.py [--repeats 7] [--warmup 5] [--steps 80] [--threads 1]

Both sides train the same nets (gen_lightning.models.nets.gan_nets, dcgan, 28x28, width 64, batch norm
in D) on the same batches (ImageDataModule digits, its seeded loader, batch 16) with the same two Adam
optimizers (2e-4, betas 0.5/0.999) and the non-saturating loss, from the same seed. One step = one
batch = one D step (fake from G under no_grad) + one G step (D frozen, as Lightning's
`toggled_optimizer` does):
  plain      the loop of PyTorch's DCGAN example, with D frozen during the G step; losses read with
             `.item()` every 10 batches;
  lightning  configs/trainer/cpu.yaml + configs/gan/dcgan_digits.yaml through the project's CLI object
             (GANModule, manual optimization), every default callback, progress bar, W&B offline.
Printed: median ms/step of each side over interleaved repeats and the ratio (goal <= 1.05x, issue 15).
About 1.7 minutes on 2 cores with the defaults (1 + 7 rounds of 2 runs of 86 batches, each started through the CLI).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _overhead import StepClock, interleave, machine, report, run_cli_fit  # noqa: E402

from gen_lightning.data import ImageDataModule  # noqa: E402
from gen_lightning.models.gan_losses import discriminator_loss, generator_loss  # noqa: E402
from gen_lightning.models.nets.gan_nets import build_gan_nets  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BATCH, LATENT, LR, BETAS, LOG_EVERY = 16, 100, 2e-4, (0.5, 0.999), 10


def plain_loop(warmup: int, steps: int) -> StepClock:
    torch.manual_seed(0)
    data = ImageDataModule("digits", image_size=28, batch_size=BATCH, seed=0)
    data.prepare_data()
    data.setup("fit")
    generator, discriminator = build_gan_nets("dcgan", (1, 28, 28), LATENT, 64, 0, "batch")
    opt_g = torch.optim.Adam(generator.parameters(), lr=LR, betas=BETAS)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=LR, betas=BETAS)
    total = warmup + steps + 1
    clock = StepClock(warmup, steps)
    step = 0
    while step <= total:
        for real, _ in data.train_dataloader():
            clock.tick(step)
            if step == total:
                return clock
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
    return clock


def lightning_fit(warmup: int, steps: int) -> StepClock:
    # global_step counts both optimizers' steps: 2 per batch (docs/gan.md).
    return run_cli_fit(
        [
            "--config",
            str(ROOT / "configs/trainer/cpu.yaml"),
            "--config",
            str(ROOT / "configs/gan/dcgan_digits.yaml"),
            "--data.batch_size",
            str(BATCH),
        ],
        warmup,
        steps,
        batches_per_step=2,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
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
    wall, cpu = interleave(
        {
            "plain": lambda: plain_loop(args.warmup, args.steps),
            "lightning": lambda: lightning_fit(args.warmup, args.steps),
        },
        args.repeats,
        args.warmup_repeats,
    )
    report(wall, "plain", "lightning", goal=1.05, what="wall")
    report(cpu, "plain", "lightning", goal=1.05, what="CPU (this process)")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
