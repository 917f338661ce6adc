"""benchmarks/tokenize_speed.py runs end to end on a slice of the default corpus and finds the three BPE token files
identical (its exit status): the figures in benchmarks/README.md come from this script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_tokenize_speed_runs_and_its_bpe_files_agree():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/tokenize_speed.py"), "--mb", "0.3", "--repeats", "1", "--vocab", "512"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    for side in ("byte", "bpe hf", "bpe serial", "bpe pool"):
        assert any(line.strip().startswith(side) and "MB/s wall" in line for line in lines), result.stdout
    assert any(line.startswith("RATIO bpe serial/hf") for line in lines), result.stdout
