"""One cell of the matrix, as one process group doing every run: `python -m tests.matrix.cell FAMILY STRATEGY OUT`.

Started as one process; for 2-process strategies Lightning's launcher starts rank 1 with the same command at the
first fit, and every later Trainer joins the same process group (as in any script that fits more than once).
Runs, all through the real CLI entry (build_cli) with the shipped configs:
  straight  N steps, W&B offline (the dashboard contract is read from this run's files)
  syncs     N steps as a user runs them (progress bar on, W&B offline, log every 4 steps), counting the host-device
            synchronisations of each training batch (probes.SyncCounter): 0 in the batches that do not log
  half      N // 2 steps, then `resumed`: --ckpt_path last to N steps (must equal `straight`)
  validate  the straight run's last checkpoint under this strategy (compared with 1 process by the test)
  nan       N steps with every loss of one batch NaN and --divergence.skip_bad_steps 3 (parameters unchanged)
  stop      the same without skipping: the run must stop with the one-line error, last.ckpt before the bad step
Each run's outcome goes to OUT/rank<r>.json; the test reads it and the files the runs wrote.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path


def main(family_name: str, strategy_name: str, out: Path) -> int:
    from gen_lightning.cli import _close_process_group, build_cli
    from gen_lightning.errors import UserError
    from tests.matrix import probes
    from tests.matrix.spec import FAMILIES, STRATEGIES, cell_args

    family, strategy = FAMILIES[family_name], STRATEGIES[strategy_name]
    probes.install_poison()
    base = cell_args(family, strategy)
    n, half = family.steps, family.steps // 2
    no_logger = ["--trainer.logger", "false"]
    runs = {
        "straight": [
            "fit",
            *base,
            "--trainer.max_steps",
            n,
            "--trainer.logger.init_args.save_dir",
            out / "straight",
            "--trainer.logger.init_args.id",
            "straight",
            "--trainer.default_root_dir",
            out / "straight",
        ],
        "syncs": [
            "fit",
            *base,
            "--trainer.max_steps",
            n,
            "--trainer.log_every_n_steps",
            "4",
            "--trainer.enable_progress_bar",
            "true",
            "--trainer.logger.init_args.save_dir",
            out / "syncs",
            "--trainer.logger.init_args.id",
            "syncs",
            "--trainer.default_root_dir",
            out / "syncs",
            "--trainer.callbacks+=tests.matrix.probes.SyncCounter",
            "--trainer.callbacks.path",
            out / "syncs.json",
        ],
        "half": ["fit", *base, *no_logger, "--trainer.max_steps", half, "--trainer.default_root_dir", out / "resumed"],
        "resumed": [
            "fit",
            *base,
            *no_logger,
            "--trainer.max_steps",
            n,
            "--trainer.default_root_dir",
            out / "resumed",
            "--ckpt_path",
            "last",
        ],
        "validate": [
            "validate",
            *base,
            *no_logger,
            "--trainer.default_root_dir",
            out / "validate",
            "--ckpt_path",
            out / "straight" / "gen-lightning" / "straight" / "checkpoints" / "last.ckpt",
            "--trainer.callbacks+=tests.matrix.probes.MetricsDump",
            "--trainer.callbacks.path",
            out / "validate.json",
        ],
        "nan": [
            "fit",
            *base,
            *no_logger,
            "--trainer.max_steps",
            n,
            "--trainer.default_root_dir",
            out / "nan",
            "--divergence.skip_bad_steps",
            "3",
            "--trainer.callbacks+=tests.matrix.probes.BadBatchProbe",
            "--trainer.callbacks.path",
            out / "nan.json",
        ],
        "stop": [
            "fit",
            *base,
            *no_logger,
            "--trainer.max_steps",
            n,
            "--trainer.default_root_dir",
            out / "stop",
            "--checkpoint.every_n_train_steps",
            "1",
        ],
    }
    results: dict = {}
    rank = 0
    for name, args in runs.items():
        if name in ("nan", "stop"):
            os.environ[probes.POISON_ENV] = str(family.bad_batch)
        try:
            build_cli([str(a) for a in args])
            results[name] = {"ok": True}
        except UserError as err:
            results[name] = {"ok": False, "user_error": str(err)}
        except BaseException as err:  # noqa: BLE001 - reported to the test with its traceback
            results[name] = {"ok": False, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        (out / f"rank{rank}.json").write_text(json.dumps(results, indent=1))
        if not results[name]["ok"] and name != "stop":
            return 1  # a failed run may leave the process group out of step: stop here, the test says which
    _close_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], Path(sys.argv[3]).resolve()))
