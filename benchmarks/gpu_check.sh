#!/usr/bin/env bash
# One-shot GPU check: pytest -m gpu, GPT-2 124M tokens/s + MFU (bf16, compile, fused AdamW), DCGAN under DDP
# and DeepSpeed ZeRO-2 (bf16 engines), GPT-2 under ZeRO-3 -- one table (benchmarks/gpu_check.py says what each
# row runs). <= 8 minutes on one GPU.
#   bash benchmarks/gpu_check.sh [--dry-run] [--gpt-batch N] [--only gpt2-124m,dcgan-ddp] [--out DIR]
# --dry-run: the same rows on CPU with tiny sizes (what CI runs, tests/test_gpu_check.py).
# PYTHON picks the interpreter (default: python on PATH, e.g. an activated venv).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" benchmarks/gpu_check.py "$@"
