"""The default logger: Weights & Biases, online when credentials exist, offline otherwise.

A run with no API key (CI, a laptop on a train, a compute node without network) still logs
everything to `<save_dir>/wandb/offline-run-*`, and `wandb sync` uploads it later. `WANDB_MODE`
(`online`, `offline`, `disabled`) is respected as wandb itself respects it.
"""

from __future__ import annotations

import netrc
import os
from typing import Optional
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn


def has_wandb_credentials() -> bool:
    """True when wandb could authenticate: an API key in the environment or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class GenWandbLogger(WandbLogger):
    def __init__(
        self,
        project: str = "gen-lightning",
        name: Optional[str] = None,
        save_dir: str = "runs",
        offline: Optional[bool] = None,
        group: Optional[str] = None,
        tags: Optional[list[str]] = None,
        log_model: bool = False,
        id: Optional[str] = None,
        entity: Optional[str] = None,
    ) -> None:
        """
        Args:
            offline: None = decide: offline unless an API key is found (env WANDB_API_KEY or `wandb login`).
            log_model: upload checkpoints as W&B artifacts (online runs).
            id: resume this W&B run id.
        """
        mode = os.environ.get("WANDB_MODE", "").lower()
        if mode == "disabled":
            offline = False  # wandb reads WANDB_MODE=disabled itself and writes nothing
        elif offline is None:
            offline = mode in ("offline", "dryrun") or (mode != "online" and not has_wandb_credentials())
            if offline and mode not in ("offline", "dryrun"):
                rank_zero_warn(
                    f"W&B: no API key found, logging offline under {save_dir}/wandb; "
                    f"upload later with `wandb sync {save_dir}/wandb/offline-run-*` (or `wandb login` first)"
                )
        os.makedirs(save_dir, exist_ok=True)
        super().__init__(
            project=project, name=name, save_dir=save_dir, offline=offline, group=group, tags=tags,
            log_model=log_model, id=id, entity=entity,
        )
