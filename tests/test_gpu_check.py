"""benchmarks/gpu_check.sh: its dry run (CPU, tiny sizes) goes through every row's code path and prints the table."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, cli_env

ROWS = ["pytest -m gpu", "gpt2-124m", "dcgan-ddp", "dcgan-zero2", "gpt2-124m-zero3"]


def _table(stdout: str) -> dict[str, dict[str, str]]:
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return {
        cells[0]: dict(zip(header, cells))
        for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[1:])
    }


@pytest.mark.slow  # five short runs in subprocesses, DeepSpeed among them: ~1-3 min on 2 loaded cores
def test_dry_run_prints_a_complete_table(tmp_path):
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
        cwd=tmp_path,
        env=cli_env(PYTHON=sys.executable, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = _table(proc.stdout)
    assert list(table) == ROWS
    assert all(row["status"].startswith("ok") for row in table.values()), table
    assert "collected" in table["pytest -m gpu"]["status"]  # dry run: the GPU tests are collected, not run
    for name in ("gpt2-124m", "gpt2-124m-zero3"):
        assert float(table[name]["tokens/s"].replace(",", "")) > 0
        assert table[name]["batch"] == "4 x 32"
    for name in ("dcgan-ddp", "dcgan-zero2"):
        assert float(table[name]["samples/s"].replace(",", "")) > 0
        assert float(table[name]["steps"]) >= 8
    assert {row["MFU"] for row in table.values()} == {"-"}  # no peak FLOPs known for a CPU
    assert (tmp_path / "dcgan-zero2.log").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_without_a_gpu_it_refuses_in_one_line(tmp_path):
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh")],
        cwd=tmp_path,
        env=cli_env(PYTHON=sys.executable),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["gpu_check: no CUDA GPU here; use --dry-run to check the script on CPU"]
