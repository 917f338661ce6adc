"""Seq2seq on two CPU processes: DDP (exact resume; validation metrics equal to one process, disjoint shards)
and DeepSpeed ZeRO-2/3 (train, resume, convert, reload, generate; ZeRO-3 generation as a collective).

Every multi-process run is a subprocess of the real CLI (tests/conftest.py).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from tests.conftest import CONFIGS, REPO, cli_env, run_cli
from tests.test_seq2seq_train import QUIET, tiny_args

pytestmark = pytest.mark.slow
DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
NO_LOGGER = ["--trainer.logger", "false"]


class DumpValidation(Callback):
    """Writes `validation-rank<R>.json` in the working folder: the metrics and the pairs this rank validated."""

    def __init__(self) -> None:
        self.sources: list[str] = []

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.sources += [str(row[mask].tolist()) for row, mask in zip(batch.source, batch.source_mask)]

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        Path(f"validation-rank{trainer.global_rank}.json").write_text(
            json.dumps({"metrics": metrics, "sources": self.sources, "world_size": trainer.world_size}))


def cli(folder: Path, *args) -> str:
    result = run_cli(list(args), folder, env=cli_env(PYTHONPATH=str(REPO)))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def max_difference(a_path: Path, b_path: Path) -> float:
    a, b = (torch.load(p, weights_only=True, map_location="cpu") for p in (a_path, b_path))
    assert a["global_step"] == b["global_step"]
    return max((a["state_dict"][k].double() - b["state_dict"][k].double()).abs().max().item() for k in a["state_dict"])


def test_ddp_resumes_exactly_and_validates_like_one_process(tmp_path):
    # 200 training pairs, batches of 10, 2 ranks: 10 steps per epoch; 8 + 8 steps cross the epoch boundary
    # and the validations at 5, 10, 15 (each generating all 4 validation batches, 2 per rank).
    args = [*tiny_args(tmp_path), *QUIET, *NO_LOGGER, *DDP, "--trainer.callbacks", "[]", "--model.dropout", "0.1",
            "--data.max_train_pairs", "200",
            "--trainer.val_check_interval", "5", "--model.decay_steps", "16"]
    cli(tmp_path, "fit", *args, "--trainer.default_root_dir", "straight", "--trainer.max_steps", "16")
    cli(tmp_path, "fit", *args, "--trainer.default_root_dir", "resumed", "--trainer.max_steps", "8")
    cli(tmp_path, "fit", *args, "--trainer.default_root_dir", "resumed", "--trainer.max_steps", "16",
        "--ckpt_path", "last")
    last = tmp_path / "straight" / "checkpoints" / "last.ckpt"
    diff = max_difference(last, tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert diff <= 1e-6, f"2-process DDP: parameters differ by {diff} after resume"

    validate = ["validate", *tiny_args(tmp_path), *QUIET, *NO_LOGGER, "--ckpt_path", str(last),
                "--trainer.callbacks+=tests.test_seq2seq_distributed.DumpValidation"]
    one = tmp_path / "one"
    one.mkdir()
    cli(one, *validate, "--trainer.devices", "1", "--trainer.accelerator", "cpu")
    two = tmp_path / "two"
    two.mkdir()
    output = cli(two, *validate, *DDP)
    assert "UserWarning: Using `DistributedSampler`" not in output  # our sampler was kept, not replaced
    single = json.loads((one / "validation-rank0.json").read_text())
    ranks = [json.loads((two / f"validation-rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2
    assert len(single["sources"]) == 39
    assert not set(ranks[0]["sources"]) & set(ranks[1]["sources"]), "each pair on one rank only"
    assert sorted(ranks[0]["sources"] + ranks[1]["sources"]) == sorted(single["sources"]), "no padded duplicates"
    assert len(ranks[0]["sources"]) != len(ranks[1]["sources"])  # uneven shards: 39 pairs on 2 ranks
    keys = {"val/loss", "val/perplexity", "val/bleu", "val/chrf", "val/exact_match"}
    assert keys <= set(single["metrics"]) and single["metrics"]["val/chrf"] > 1.0  # a real score, not an empty 0
    for rank in ranks:
        for key in keys:
            assert rank["metrics"][key] == pytest.approx(single["metrics"][key], rel=1e-6, abs=1e-9), key


deepspeed = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")


@pytest.fixture(scope="module")
def zero_runs(tmp_path_factory):
    """stage -> (folder, outputs, converted checkpoint) of a run trained 4 steps, resumed to 6, converted."""
    runs: dict[int, tuple[Path, list[str], dict]] = {}

    def get(stage: int):
        if stage not in runs:
            folder = tmp_path_factory.mktemp(f"seq2seq-zero{stage}")
            args = ["fit", "--config", CONFIGS / "trainer" / f"deepspeed_stage{stage}.yaml", *tiny_args(folder), *QUIET,
                    *NO_LOGGER, "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--model.decay_steps", "6",
                    # a validation with generation (beam search) in each run: under ZeRO-3 every forward is a collective
                    "--trainer.val_check_interval", "4"]
            last = folder / "runs" / "checkpoints" / "last.ckpt"
            outputs = [cli(folder, *args, "--trainer.max_steps", "4"),
                       cli(folder, *args, "--trainer.max_steps", "6", "--ckpt_path", str(last))]
            cli(folder, "convert", str(last))
            converted = torch.load(folder / "runs" / "checkpoints" / "last-fp32.ckpt", map_location="cpu",
                                   weights_only=False)
            runs[stage] = (folder, outputs, converted)
        return runs[stage]

    return get


@deepspeed
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_trains_resumes_converts_and_generates(zero_runs, stage):
    folder, (first, resumed), checkpoint = zero_runs(stage)
    assert "MEMBER: 1/2" in first and "MEMBER: 2/2" in first
    last = folder / "runs" / "checkpoints" / "last.ckpt"
    assert last.is_dir() and f"Restored all states from the checkpoint at {last}" in resumed
    assert checkpoint["global_step"] == 6
    from gen_lightning.models import Seq2SeqModule

    converted = folder / "runs" / "checkpoints" / "last-fp32.ckpt"
    model = Seq2SeqModule.load_from_checkpoint(converted, map_location="cpu")  # strict: all keys, full shapes
    assert model.net.decoder.wte.weight is model.net.lm_head.weight
    out = model.generate_targets(["def open_file(self, file):\n    return self._open(file)"], 8, num_beams=2)
    assert len(out) == 1 and isinstance(out[0], str)


@deepspeed
def test_zero3_gathers_the_same_weights_as_zero2(zero_runs):
    zero2, zero3 = zero_runs(2)[2]["state_dict"], zero_runs(3)[2]["state_dict"]
    assert zero2.keys() == zero3.keys()
    for key in zero2:
        torch.testing.assert_close(zero3[key], zero2[key], rtol=1e-4, atol=1e-5, msg=key)
