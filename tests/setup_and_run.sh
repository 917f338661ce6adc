#!/usr/bin/env bash
# The README's test command (inside a virtualenv): install everything the tests need that pip can install -- the
# package with its dev extras, and DeepSpeed (its ops are compiled on first use, so no CUDA toolkit is needed) --
# then ruff (lint + format check) and the whole suite. pytest's summary ends with the test groups that ran and those skipped, and why.
# Arguments go to pytest. System packages (Slurm, munge) are not installed here: .ci/run installs them, or set
# GEN_LIGHTNING_INSTALL_SLURM=1 to let the slurm tests do it (root); without them those tests skip, saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
quiet() { "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
quiet python -m pip install --quiet --upgrade pip
quiet pip install --quiet -e ".[dev]"
DS_BUILD_OPS=0 quiet pip install --quiet --no-build-isolation deepspeed
python -c "import deepspeed, gen_lightning" 2>/dev/null || { echo "setup failed: see the pip output above" >&2; exit 1; }
# Lint and format first (seconds): a style slip fails here in one line, before 40 minutes of tests.
ruff check gen_lightning tests benchmarks || { echo "ruff check failed: run \`ruff check --fix\` and fix what is left" >&2; exit 1; }
ruff format --check gen_lightning tests benchmarks || { echo "ruff format --check failed: run \`ruff format gen_lightning tests benchmarks\`" >&2; exit 1; }
exec python -m pytest "$@"
