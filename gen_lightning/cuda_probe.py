"""No NVML probe in every optimizer step on a machine without a CUDA device.

`import lightning` sets PYTORCH_NVML_BASED_CUDA_CHECK=1, so that `torch.cuda.is_available()` asks NVML instead of
initialising CUDA (a process that initialised CUDA cannot fork children that use it). torch only caches the answer
once CUDA is initialised, which never happens on a machine without a GPU, and every torch optimizer asks it in every
`step()` (`Optimizer._accelerator_graph_capture_health_check`). With the CUDA build of torch on such a machine each
step then loads libnvidia-ml again (ctypes.CDLL): measured 76 us per call warm, ~0.4 ms right after a backward; a
10-parameter Adam step took 181 us instead of 96. The DCGAN digits run makes two such steps per 45 ms batch.

`install()`, called where the CLI starts: when this process sees no CUDA device at all, torch's own check (the CUDA
runtime's device count, cached by torch after its first call) is used instead. With no device there is nothing a
fork could lose. With a device, nothing changes. Lightning sets the variable again in every process that imports it.
"""

from __future__ import annotations

import os

_VARIABLE = "PYTORCH_NVML_BASED_CUDA_CHECK"


def install() -> None:
    import torch

    if os.environ.get(_VARIABLE) != "1" or torch.cuda.is_initialized():
        return
    if torch.cuda.device_count() == 0:  # NVML's answer (or the runtime's where NVML fails): no device here
        os.environ[_VARIABLE] = "0"
