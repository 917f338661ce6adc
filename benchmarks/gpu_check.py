"""The one-shot GPU check (run through benchmarks/gpu_check.sh): one table of what a GPU changes.

    bash benchmarks/gpu_check.sh              # on a CUDA machine, <= 8 minutes on one GPU
    bash benchmarks/gpu_check.sh --dry-run    # the same cases and code paths on CPU with tiny sizes (CI)

Rows, each a real `gen-lightning fit` in its own process (every default callback on; validation off, the
config's FID/sample callbacks dropped: this measures training), metrics read from a CSVLogger's metrics.csv:
  pytest -m gpu          the repository's GPU tests (dry run: collected only)
  gpt2-124m              GPT-2 124M (vocab 50304, block 1024) bf16-mixed, torch.compile, fused AdamW (the
                         module's default on CUDA), batch `--gpt-batch` (halved on out-of-memory): tokens/s, MFU
  dcgan-ddp              DCGAN on CIFAR-shaped synthetic images (3x32x32), `strategy: ddp`, 1 GPU
  dcgan-zero2            the same under DeepSpeed ZeRO-2, bf16: one engine per network, both in bf16
  gpt2-124m-zero3        the same GPT under DeepSpeed ZeRO-3 (no compile: ZeRO-3 gathers parameters in hooks
                         around every module's forward, which torch.compile would graph-break on)
The dry run keeps every flag (precision, strategy, compile) except sizes: nets of a few thousand weights, a
few steps, 32-true instead of bf16 for the DeepSpeed rows on CPU (DeepSpeed has no CPU bf16 engine), compile off
(inductor's C++ build alone takes minutes on 2 cores; tests/test_compile.py covers compile on CPU).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
COMMON = [
    "--trainer.limit_val_batches",
    "0",
    "--trainer.num_sanity_val_steps",
    "0",
    "--trainer.callbacks=[]",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--checkpoint.save_last",
    "false",
]


def _cases(dry: bool, gpt_batch: int) -> dict[str, list[str]]:
    hw = (["--trainer.accelerator", "cpu"] if dry else ["--trainer.accelerator", "gpu"]) + ["--trainer.devices", "1"]
    ds_precision = "32-true" if dry else "bf16-mixed"
    gpt = ["--config", str(CONFIGS / "gpt" / "nano_stdlib.yaml")]
    gpt += (
        [
            "--model.n_layer",
            "1",
            "--model.n_head",
            "2",
            "--model.n_embd",
            "32",
            "--data.block_size",
            "32",
            "--data.batch_size",
            "4",
            "--data.corpus",
            "stdlib:json/*.py",
            "--trainer.max_steps",
            "8",
            "--trainer.log_every_n_steps",
            "2",
            "--throughput.window_size",
            "3",
        ]
        if dry
        # GPT-2's vocabulary size (padded, as nanoGPT does): a BPE of 50304 ids trained on the corpus;
        # model.vocab_size and model.block_size are linked from the data (config_links.py).
        else [
            "--model.size",
            "gpt2",
            "--data.tokenizer",
            "bpe",
            "--data.vocab_size",
            "50304",
            "--data.block_size",
            "1024",
            "--data.batch_size",
            str(gpt_batch),
            "--trainer.max_steps",
            "60",
            "--trainer.log_every_n_steps",
            "10",
            "--throughput.window_size",
            "20",
        ]
    )
    gan = [
        "--config",
        str(CONFIGS / "gan" / "dcgan_cifar10.yaml"),
        "--data.dataset",
        "synthetic",
        "--data.image_size",
        "32",
        "--data.channels",
        "3",
        "--data.num_workers",
        "2",
    ]
    gan += (
        [
            "--model.width",
            "8",
            "--model.latent_dim",
            "8",
            "--data.batch_size",
            "8",
            "--data.synthetic_size",
            "96",
            "--trainer.max_steps",
            "16",
            "--trainer.log_every_n_steps",
            "2",
            "--throughput.window_size",
            "3",
        ]
        if dry
        else [
            "--data.batch_size",
            "256",
            "--data.synthetic_size",
            "32768",
            "--trainer.max_steps",
            "400",
            "--trainer.log_every_n_steps",
            "20",
            "--throughput.window_size",
            "40",
        ]
    )
    trainer = lambda name: ["--config", str(CONFIGS / "trainer" / name)]  # noqa: E731 - first: the experiment wins
    compile_ = ["--model.compile", "false" if dry else "true"]
    return {
        "gpt2-124m": [*trainer("gpu.yaml"), *gpt, *hw, "--trainer.precision", "bf16-mixed", *compile_],
        "dcgan-ddp": [*trainer("ddp.yaml"), *gan, *hw, "--trainer.precision", "bf16-mixed"],
        "dcgan-zero2": [*trainer("deepspeed_stage2.yaml"), *gan, *hw, "--trainer.precision", ds_precision],
        "gpt2-124m-zero3": [
            *trainer("deepspeed_stage3.yaml"),
            *gpt,
            *hw,
            "--trainer.precision",
            ds_precision,
            "--model.compile",
            "false",
        ],
    }


def _last(rows: list[dict], key: str) -> float:
    values = [float(r[key]) for r in rows if r.get(key) not in (None, "")]
    return values[-1] if values else math.nan


def _fit(name: str, args: list[str], out: Path, env: dict, timeout: float) -> dict:
    save = out / name
    cmd = [
        sys.executable,
        "-m",
        "gen_lightning",
        "fit",
        *args,
        *COMMON,
        "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.save_dir",
        str(save),
        "--trainer.default_root_dir",
        str(save),
    ]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired as err:  # one stuck row must not eat the whole check's budget
        (out / f"{name}.log").write_text(
            "".join(x.decode(errors="replace") if isinstance(x, bytes) else x or "" for x in (err.stdout, err.stderr))
        )
        return {"status": f"FAILED: over {timeout:.0f} s (--timeout)", "wall": time.perf_counter() - start}
    wall = time.perf_counter() - start
    (out / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line.strip()]
        return {
            "status": f"FAILED (exit {proc.returncode}): {lines[-1][:90] if lines else ''}",
            "wall": wall,
            "oom": "out of memory" in proc.stderr.lower(),
        }
    files = sorted(save.rglob("metrics.csv"))
    rows = list(csv.DictReader(files[-1].open())) if files else []
    return {
        "status": "ok",
        "wall": wall,
        "steps": _last(rows, "step") + 1,
        "samples/s": _last(rows, "throughput/samples_per_sec"),
        "tokens/s": _last(rows, "throughput/tokens_per_sec"),
        "MFU": _last(rows, "throughput/device/mfu"),
        "max GiB": _last(rows, "gpu/max_allocated"),
    }


def _pytest_gpu(dry: bool, env: dict) -> dict:
    files = [
        str(p.relative_to(REPO))
        for p in sorted((REPO / "tests").glob("test_*.py"))
        if "mark.gpu" in p.read_text(encoding="utf-8")
    ]
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *files]
    start = time.perf_counter()
    proc = subprocess.run(
        [*cmd, "--collect-only"] if dry else cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    summary = next(
        (
            line
            for line in reversed(proc.stdout.splitlines())
            if re.search(
                r"\d+ (passed|failed|"
                r"error|skipped|selected|tests? collected|deselected)",
                line,
            )
        ),
        proc.stdout.strip()[-90:],
    )
    ok = proc.returncode == 0
    return {
        "status": ("ok" if ok else f"FAILED (exit {proc.returncode})") + f": {summary.strip('= ')}",
        "wall": time.perf_counter() - start,
    }


def _fmt(value, digits: int = 0) -> str:
    if not isinstance(value, float) or math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: checks the script, not the GPU")
    parser.add_argument("--gpt-batch", type=int, default=48, help="GPT-2 batch (x 1024 tokens); halved on OOM")
    parser.add_argument("--only", default="", help="comma-separated rows to run (default: all)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one row may take (then: FAILED)")
    parser.add_argument("--out", type=Path, help="folder for the runs' logs (default: a temporary one)")
    args = parser.parse_args()
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: no CUDA GPU here; use --dry-run to check the script on CPU", file=sys.stderr)
            return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "WANDB_MODE": "disabled",
        "PYTHONUNBUFFERED": "1",
    }
    if args.dry_run:
        env["OMP_NUM_THREADS"] = "1"
    only = {x for x in args.only.split(",") if x}
    results: dict[str, dict] = {}
    if not only or "pytest" in only:
        results["pytest -m gpu"] = _pytest_gpu(args.dry_run, env)
    batch = args.gpt_batch
    for name, case in _cases(args.dry_run, batch).items():
        if only and name not in only:
            continue
        result = _fit(name, case, out, env, args.timeout)
        while name == "gpt2-124m" and result.get("oom") and batch > 1:  # the largest batch that fits
            batch //= 2
            result = _fit(name, _cases(args.dry_run, batch)[name], out, env, args.timeout)
        if name.startswith("gpt2"):
            result["batch"] = f"{batch if not args.dry_run else 4} x {1024 if not args.dry_run else 32}"
        results[name] = result

    import platform

    print(f"\ngpu_check{' --dry-run (CPU, tiny sizes)' if args.dry_run else ''}: {platform.node()}, logs in {out}")
    header = ["case", "status", "batch", "steps", "samples/s", "tokens/s", "MFU", "max GiB", "wall s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, r in results.items():
        print(
            f"| {name} | {r['status']} | {r.get('batch', '-')} | {_fmt(r.get('steps'))} | "
            f"{_fmt(r.get('samples/s'), 1)} | {_fmt(r.get('tokens/s'))} | {_fmt(r.get('MFU'), 3)} | "
            f"{_fmt(r.get('max GiB'), 1)} | {r['wall']:.0f} |"
        )
    return 0 if all(r["status"].startswith("ok") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
