"""gen_lightning/result_metric_move.py: `self.log` skips Lightning's re-copy of a logged value's bookkeeping when
everything is already on the value's device, and logs exactly what it logged without the shortcut."""

from __future__ import annotations

from unittest import mock

import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.trainer.connectors.logger_connector import result
from lightning.pytorch.trainer.connectors.logger_connector.result import _Metadata, _ResultMetric, _Sync
from torchmetrics import MeanMetric

from gen_lightning import result_metric_move
from tests.helpers import tiny_trainer


class LoggingModel(BoringModel):
    """Logs every kind `self.log` accumulates: mean, max and sum reductions, on step and on epoch, a Metric object."""

    def __init__(self) -> None:
        super().__init__()
        self.mean_metric = MeanMetric()

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        loss = out["loss"]
        self.mean_metric(loss.detach() * 2)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/max", loss.detach() + batch_idx, on_step=False, on_epoch=True, reduce_fx="max")
        self.log("train/sum", torch.tensor(1.0 + batch_idx), on_step=False, on_epoch=True, reduce_fx="sum")
        self.log("train/metric", self.mean_metric, on_step=True, on_epoch=True)
        return out

    def validation_step(self, batch, batch_idx):
        loss = self.step(batch)
        self.log("val/loss", loss, batch_size=len(batch))


def _run(tmp_path) -> tuple[dict, dict]:
    torch.manual_seed(0)
    trainer = tiny_trainer(tmp_path, max_steps=12, log_every_n_steps=3)
    trainer.limit_val_batches = 2
    trainer.limit_train_batches = 6  # two epochs, each ending in a validation
    trainer.fit(LoggingModel())
    as_floats = lambda metrics: {k: float(v) for k, v in metrics.items()}  # noqa: E731
    return as_floats(trainer.logged_metrics), as_floats(trainer.callback_metrics)


def test_the_same_metrics_are_logged_with_and_without_it(tmp_path):
    result_metric_move.uninstall()
    try:
        lightning = _run(tmp_path / "lightning")
    finally:
        result_metric_move.install()
    ours = _run(tmp_path / "ours")
    assert ours == lightning
    assert {"train/loss_step", "train/max", "train/sum", "train/metric_epoch", "val/loss"} <= set(ours[1])


def test_a_value_on_the_metrics_device_is_not_copied_again_and_another_device_is_moved():
    result_metric_move.install()
    meta = _Metadata(fx="training_step", name="x", on_step=True, on_epoch=True)
    meta.sync = _Sync()
    metric = _ResultMetric(meta, is_tensor=True)
    metric.update(torch.tensor(1.0), 4)
    with mock.patch.object(result, "apply_to_collection", wraps=result.apply_to_collection) as walk:
        assert metric.to(torch.device("cpu")) is metric
        assert metric.to(device="cpu") is metric
        assert walk.call_count == 0  # Lightning's move (a walk over the whole __dict__) was not needed
        metric.to(torch.device("meta"))  # somewhere else: Lightning's move
        assert walk.call_count == 1
    assert metric.value.device.type == "meta" and metric.cumulated_batch_size.device.type == "meta"


def test_every_tensor_of_a_result_metric_is_one_the_check_looks_at():
    """A Lightning or torchmetrics that keeps another tensor in a `_ResultMetric` fails here: the check would not
    see it and could skip a move it needs."""
    meta = _Metadata(fx="training_step", name="x", on_step=True, on_epoch=True)
    meta.sync = _Sync()
    metric = _ResultMetric(meta, is_tensor=True)
    metric.update(torch.tensor(1.0), 4)
    metric.compute()
    found, seen = [], set()

    def walk(value):
        if id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple, set)):
            for item in value:
                walk(item)
        elif hasattr(value, "__dict__") and not isinstance(value, type) and not callable(value):
            walk(vars(value))

    walk(dict(metric.__dict__))
    checked = {id(t) for t in result_metric_move._tensors(metric) if t is not None}
    assert found and all(id(t) in checked for t in found)
