"""`gen-lightning sample` on checkpoints of unknown family: image models write a PNG grid; bad input exits 2."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from gen_lightning.commands import sample
from gen_lightning.errors import UserError
from tests.conftest import CONFIGS
from tests.helpers import QUIET_KEEP_SUMMARY


def test_vae_checkpoint_samples_a_png_grid(cli):
    fit = cli(
        "fit",
        "--config",
        CONFIGS / "vae" / "mlp_digits.yaml",
        "--trainer.max_steps",
        3,
        "--trainer.limit_val_batches",
        1,
        *QUIET_KEEP_SUMMARY,
    )
    assert fit.returncode == 0, fit.stderr[-2000:]
    last = cli.cwd / "runs" / "checkpoints" / "last.ckpt"
    result = cli("sample", "--ckpt", last, "--n", 12, "--nrow", 4, "--out", "out/grid.png", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote 12 samples" in result.stdout
    grid = Image.open(cli.cwd / "out" / "grid.png")
    # 4 columns x 3 rows of 28x28 digits with torchvision's 2-pixel padding around each.
    assert grid.size == (4 * 30 + 2, 3 * 30 + 2)
    pixels = torch.tensor(list(grid.convert("L").getdata()), dtype=torch.float32)
    assert pixels.std() > 5  # not a blank image


def test_missing_or_foreign_checkpoints_are_user_errors(tmp_path):
    # In-process: the CLI turns these UserErrors into one line and exit 2 (tests/test_cli_errors.py).
    with pytest.raises(UserError, match="does not exist"):
        sample.main(["--ckpt", str(tmp_path / "nowhere.ckpt")])
    torch.save({"state_dict": {}}, tmp_path / "plain.ckpt")  # not written by `gen-lightning fit`
    with pytest.raises(UserError, match="does not name its model class"):
        sample.main(["--ckpt", str(tmp_path / "plain.ckpt")])
    (tmp_path / "garbage.ckpt").write_text("not a checkpoint")
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        sample.main(["--ckpt", str(tmp_path / "garbage.ckpt")])
