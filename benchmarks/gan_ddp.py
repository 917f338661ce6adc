"""GAN under 2-process CPU DDP: per-network DDP wrappers (`ddp`) vs Lightning's whole-module
`ddp_find_unused_parameters_true`.

    python benchmarks/gan_ddp.py            # ~2-3 min on 2 cores; prints seconds per batch and the ratio

One batch = n_critic discriminator steps + 1 generator step (n_critic = 1 here: 2 optimizer steps).
Each strategy runs in its own `python benchmarks/gan_ddp.py --worker STRATEGY` process pair (Lightning
launches rank 1 by re-running this script), alternating A B A B so that load from other programs hits
both alike; the first batches of each run are a warm-up and are not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

STRATEGIES = ("ddp", "ddp_find_unused_parameters_true")


def worker(strategy: str, batches: int, warmup: int, batch_size: int) -> None:
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import Callback

    import gen_lightning.strategies  # noqa: F401 - registers `ddp` as SubmoduleDDPStrategy
    from gen_lightning.data import ImageDataModule
    from gen_lightning.models import GANModule

    class BatchTimer(Callback):
        def __init__(self) -> None:
            self.start = None
            self.timed = 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if trainer.fit_loop.epoch_loop.batch_progress.total.completed == warmup:
                torch.distributed.barrier()
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if self.start is not None:
                self.timed += 1

        def on_train_end(self, trainer, pl_module) -> None:
            torch.distributed.barrier()
            seconds = (time.perf_counter() - self.start) / self.timed
            if trainer.is_global_zero:
                print(
                    "RESULT " + json.dumps({"strategy": strategy, "s_per_batch": seconds, "batches": self.timed}),
                    flush=True,
                )

    L.seed_everything(0, verbose=False)
    model = GANModule(net="dcgan", image_size=28, width=64)
    data = ImageDataModule("digits", image_size=28, batch_size=batch_size)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=strategy,
        max_steps=2 * (warmup + batches),
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[BatchTimer()],
    )
    trainer.fit(model, data)
    torch.distributed.destroy_process_group()  # clean exit of the gloo group (see cli._close_process_group)


def run_worker(strategy: str, args) -> float:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        strategy,
        "--batches",
        str(args.batches),
        "--warmup",
        str(args.warmup),
        "--batch-size",
        str(args.batch_size),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    results = [json.loads(line[7:]) for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not results:
        raise SystemExit(f"{strategy} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return results[0]["s_per_batch"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=STRATEGIES)
    parser.add_argument("--batches", type=int, default=40, help="timed batches per run")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.batches, args.warmup, args.batch_size)
        return
    times = {s: [] for s in STRATEGIES}
    for _ in range(args.repeats):
        for strategy in STRATEGIES:
            times[strategy].append(run_worker(strategy, args))
    print(
        f"DCGAN 28x28 digits, batch {args.batch_size}/process, 2 CPU processes (gloo), "
        f"{args.batches} timed batches x {args.repeats} runs; one batch = 1 D step + 1 G step"
    )
    best = {s: min(t) for s, t in times.items()}  # the least disturbed run of each
    for strategy in STRATEGIES:
        runs = ", ".join(f"{t * 1000:.0f}" for t in times[strategy])
        print(
            f"  {strategy:34s} {best[strategy] * 1000:7.1f} ms/batch (best of: {runs} ms; "
            f"median {statistics.median(times[strategy]) * 1000:.1f})"
        )
    ratio = best["ddp_find_unused_parameters_true"] / best["ddp"]
    print(f"  ratio find_unused_parameters_true / ddp (per-network wrappers): {ratio:.2f}x")


if __name__ == "__main__":
    main()
