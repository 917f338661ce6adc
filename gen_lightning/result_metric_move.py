"""`self.log` without re-copying each logged value's bookkeeping when nothing has to move.

Every `self.log(name, value)` ends in `_ResultCollection.log`, which calls `self[key].to(value.device)` on the
`_ResultMetric` that accumulates the value. Lightning's `_ResultMetric.to` runs `move_data_to_device` over a copy of
the metric's whole `__dict__`: every torchmetrics attribute, and its `_Metadata` dataclass, which `apply_to_collection`
deep-copies, on every call, although after the first call everything is already on that device. Measured on
GANModule's 4 values per logging step (tiny nets, benchmarks/README.md §5): its `log_dict` took ~2.7 ms before and
~1.7 ms after, ~0.25 ms less per logged value.

`install()` (called where the CLI starts) puts a check in front of it: a tensor `_ResultMetric` whose tensors (its
states, their defaults, the forward cache and the computed value) are all on the requested device is returned as it is,
which is what Lightning's move produces too (`Tensor.to(its own device)` returns the same tensor; only the metadata
object would have been replaced by an equal copy). Anything else (a torchmetrics `Metric` logged as the value, a tensor
elsewhere, a dtype or other argument) goes to Lightning's method. Written by hand: Lightning has no such switch.
tests/test_result_metric_move.py checks that logged and callback metrics are the same with it and without it.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultMetric

_lightning_to = _ResultMetric.to


def _requested_device(args: tuple, kwargs: dict) -> torch.device | None:
    if len(args) == 1 and not kwargs:
        target = args[0]
    elif not args and set(kwargs) == {"device"}:
        target = kwargs["device"]
    else:
        return None
    if isinstance(target, str):
        return torch.device(target)
    return target if isinstance(target, torch.device) else None


def _tensors(metric: _ResultMetric):
    yield metric.value
    yield getattr(metric, "cumulated_batch_size", None)
    yield metric._forward_cache
    yield metric._computed
    yield from metric._defaults.values()


def _already_on(metric: _ResultMetric, device: torch.device) -> bool:
    if not metric.is_tensor or getattr(metric, "_cache", None) is not None:  # a Metric value, or inside a sync
        return False
    for tensor in _tensors(metric):
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor) or tensor.device != device:
            return False
    return True


def to(self: _ResultMetric, *args: Any, **kwargs: Any) -> _ResultMetric:
    device = _requested_device(args, kwargs)
    if device is not None and _already_on(self, device):
        return self
    return _lightning_to(self, *args, **kwargs)


def install() -> None:
    """Route `_ResultMetric.to` through the check above (idempotent)."""
    _ResultMetric.to = to


def uninstall() -> None:
    """Lightning's own method again (tests compare the two)."""
    _ResultMetric.to = _lightning_to
