"""Training step time with `compile: true` (torch.compile, inductor) against eager, on this machine.

    python benchmarks/compile_speed.py [--steps 20] [--repeats 3] [--threads 1]

Two twins of each net (same initial weights), one compiled in place the way the modules do it
(gen_lightning/models/compiled.py), trained side by side on the same batches: blocks of `--steps` steps,
interleaved eager / compiled, `--repeats` blocks each after one warm-up block (the compile happens there and
is reported on its own). A step = forward, loss, backward, optimizer step, as in the families' training_step:
  gpt     nano GPT (4 layers, 4 heads, 128 wide), byte vocab, batch 16 x block 128, AdamW
  dcgan   DCGAN 28x28x1 (width 64, latent 100), batch 64, one D step + one G step (non-saturating), Adam
Prints median ms per step, the ratio compiled/eager (< 1 = compiled faster) and the one-off compile time.
About 3-6 minutes on 2 cores (most of it inductor's C++ compile).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from gen_lightning.models.compiled import compile_nets
from gen_lightning.models.nets.gan_nets import build_gan_nets
from gen_lightning.models.nets.transformer import GPT, GPTConfig


def gpt_side(net: GPT, batches: list[torch.Tensor]):
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)

    def step(i: int) -> None:
        x = batches[i % len(batches)]
        logits = net(x[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def dcgan_side(nets: tuple[torch.nn.Module, torch.nn.Module], reals: list[torch.Tensor], latent: int):
    g, d = nets
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(0)

    def step(i: int) -> None:
        real = reals[i % len(reals)]
        z = torch.randn(real.shape[0], latent, generator=gen)
        fake = g(z, None)
        d_loss = F.softplus(-d(real, None)).mean() + F.softplus(d(fake.detach(), None)).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = F.softplus(-d(fake, None)).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()

    return step


def timed(step, start: int, steps: int) -> float:
    t0 = time.perf_counter()
    for i in range(start, start + steps):
        step(i)
    return (time.perf_counter() - t0) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", choices=["gpt", "dcgan"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import os

    print(
        f"torch {torch.__version__}, {args.threads} thread(s), load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    cases = {}
    if args.only in (None, "gpt"):
        gpt = GPT(GPTConfig.named("nano", block_size=128, vocab_size=257))
        tokens = [torch.randint(0, 257, (16, 129)) for _ in range(4)]
        twin = copy.deepcopy(gpt)
        compile_nets(twin)
        cases["gpt"] = (gpt_side(gpt, tokens), gpt_side(twin, tokens))
    if args.only in (None, "dcgan"):
        nets = build_gan_nets("dcgan", (1, 28, 28), 100, 64, 0, "batch")
        reals = [torch.rand(64, 1, 28, 28) * 2 - 1 for _ in range(4)]
        twins = copy.deepcopy(nets)
        compile_nets(*twins)
        cases["dcgan"] = (dcgan_side(nets, reals, 100), dcgan_side(twins, reals, 100))
    for name, (eager, compiled) in cases.items():
        t0 = time.perf_counter()
        compiled(0)  # the compile: forward and backward graphs, inductor's C++ kernels
        compile_s = time.perf_counter() - t0
        timed(eager, 0, args.steps)  # warm-up blocks, not counted
        timed(compiled, 1, args.steps)
        eager_ms, compiled_ms = [], []
        for r in range(args.repeats):
            eager_ms.append(timed(eager, r * args.steps, args.steps))
            compiled_ms.append(timed(compiled, r * args.steps, args.steps))
        e, c = statistics.median(eager_ms), statistics.median(compiled_ms)
        print(
            f"{name}: eager {e:.1f} ms/step ({', '.join(f'{x:.1f}' for x in eager_ms)}), compiled {c:.1f} ms/step "
            f"({', '.join(f'{x:.1f}' for x in compiled_ms)}); RATIO compiled/eager = {c / e:.3f}x; "
            f"first compiled step (compile) {compile_s:.1f} s"
        )
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
