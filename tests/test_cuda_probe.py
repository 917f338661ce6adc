"""gen_lightning/cuda_probe.py: on a machine without a CUDA device, an optimizer step no longer loads NVML."""

from __future__ import annotations

import ctypes
import os
from unittest import mock

import pytest
import torch

from gen_lightning import cuda_probe


def _nvml_loads_per_step() -> int:
    parameter = torch.nn.Parameter(torch.zeros(4))
    parameter.grad = torch.ones(4)
    optimizer = torch.optim.Adam([parameter])
    with mock.patch.object(ctypes, "CDLL", wraps=ctypes.CDLL) as cdll:
        for _ in range(3):
            optimizer.step()
    return cdll.call_count / 3


@pytest.mark.skipif(not torch.backends.cuda.is_built(), reason="a CPU-only torch never probes CUDA")
def test_no_device_no_nvml_probe_in_the_step(monkeypatch):
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # as `import lightning` leaves it
    if torch.cuda.is_initialized() or torch.cuda.device_count() > 0:
        pytest.skip("this machine has a CUDA device (the CPU-only case is what is tested; the other is below)")
    assert _nvml_loads_per_step() >= 1  # the cost being removed: NVML loaded again in every step
    cuda_probe.install()
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "0"
    assert _nvml_loads_per_step() == 0
    assert torch.cuda.is_available() is False


def test_with_a_device_nothing_changes(monkeypatch):
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    cuda_probe.install()
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"


def test_the_cli_installs_it(monkeypatch):
    from gen_lightning import cli

    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    with mock.patch.object(cuda_probe, "install", wraps=cuda_probe.install) as install:
        with pytest.raises(SystemExit):
            cli.build_cli(["--help"])
    assert install.call_count == 1
