"""The default logger: Weights & Biases, online when credentials exist, offline otherwise.

A run with no API key (CI, a laptop on a train, a compute node without network) still logs
everything to `<save_dir>/wandb/offline-run-*`, and `wandb sync` uploads it later. `WANDB_MODE`
(`online`, `offline`, `disabled`) is respected as wandb itself respects it. Nothing here opens a
network connection: "online" is decided from the presence of a key, never by probing a server.

Only rank 0 talks to W&B: Lightning's WandbLogger hands the other ranks a dummy experiment.
"""

from __future__ import annotations

import netrc
import os
from typing import Any, Literal, Optional, Union
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn

from gen_lightning.errors import UserError


def has_wandb_credentials() -> bool:
    """True when wandb could authenticate: an API key in the environment or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_mode(offline: Optional[bool]) -> str:
    """`online`, `offline` or `disabled`: WANDB_MODE first, then the `offline` option, then credentials."""
    env = os.environ.get("WANDB_MODE", "").lower()
    if env == "disabled":
        return "disabled"
    if env in ("offline", "dryrun"):
        return "offline"
    if offline is not None:
        return "offline" if offline else "online"
    if env == "online" or has_wandb_credentials():
        return "online"
    return "offline"


class GenWandbLogger(WandbLogger):
    def __init__(
        self,
        project: str = "gen-lightning",
        name: Optional[str] = None,
        save_dir: str = "runs",
        offline: Optional[bool] = None,
        group: Optional[str] = None,
        tags: Optional[list[str]] = None,
        notes: Optional[str] = None,
        log_model: Union[bool, Literal["all"]] = False,
        id: Optional[str] = None,
        entity: Optional[str] = None,
    ) -> None:
        """
        Args:
            project: W&B project of the run.
            name: the run's display name; None = W&B's.
            save_dir: folder of the local W&B files (offline runs, `wandb sync` later).
            offline: None = decide: offline unless an API key is found (WANDB_API_KEY or `wandb login`).
            log_model: checkpoints as W&B artifacts: True = at the end of training (last + best),
                "all" = every checkpoint as it is written. Offline runs keep them for `wandb sync`.
            group: W&B group (the experiment files set their own; sweeps their name).
            tags: W&B tags of the run.
            notes: a description of the run shown in W&B.
            id: resume this W&B run id.
            entity: W&B user or team owning the project; None = the logged-in user's default.
        """
        mode = wandb_mode(offline)
        if mode == "online" and not has_wandb_credentials():  # wandb itself would prompt, or fail mid-start
            asked = (
                "WANDB_MODE=online" if os.environ.get("WANDB_MODE", "").lower() == "online" else "logger offline=false"
            )
            raise UserError(
                f"W&B: {asked} but no API key found (WANDB_API_KEY or `wandb login`); log in, or log "
                f"offline with WANDB_MODE=offline (upload later with `wandb sync`)"
            )
        if (
            mode == "offline"
            and offline is None
            and os.environ.get("WANDB_MODE", "").lower() not in ("offline", "dryrun")
        ):
            rank_zero_warn(
                f"W&B: no API key found, logging offline under {save_dir}/wandb; upload later with "
                f"`wandb sync {save_dir}/wandb/offline-run-*` (after `wandb login`)"
            )
        try:
            os.makedirs(save_dir, exist_ok=True)
        except OSError as err:  # before training, not at the first checkpoint hours later
            raise UserError(
                f"logger save_dir '{save_dir}' is not a writable folder ({err.strerror or err}); "
                f"choose another folder or fix its permissions"
            ) from None
        # `offline=False` to Lightning and the mode straight to wandb.init: Lightning would otherwise
        # set WANDB_MODE for the whole process (and its children) and refuse log_model offline, although
        # an offline wandb run records artifacts and `wandb sync` uploads them.
        super().__init__(
            project=project,
            name=name,
            save_dir=save_dir,
            offline=False,
            group=group,
            tags=tags,
            notes=notes,
            log_model=log_model,
            id=id,
            entity=entity,
            mode=mode,
        )
        self._wandb_init.pop("anonymous", None)  # deprecated in wandb; passing None still warns

    @property
    def experiment(self):
        """Lightning's W&B run, but a server that cannot be reached means offline, not a dead run."""
        import wandb

        try:
            return WandbLogger.experiment.fget(self)
        except wandb.errors.CommError as err:
            if self._experiment is not None or self._wandb_init.get("mode") != "online":
                raise
            save_dir = self._wandb_init.get("dir")
            rank_zero_warn(
                f"W&B: cannot reach the server ({str(err).splitlines()[0][:200]}); logging offline under "
                f"{save_dir}/wandb instead, upload later with `wandb sync {save_dir}/wandb/offline-run-*`"
            )
            self._wandb_init["mode"] = "offline"
            return WandbLogger.experiment.fget(self)

    @property
    def mode(self) -> str:
        return self._wandb_init["mode"]

    def log_hyperparams(self, params: Any) -> None:
        # Lightning adds private bookkeeping such as `_instantiator` to a module's hparams; the W&B
        # config is for the user's settings only.
        if isinstance(params, dict):
            params = {k: v for k, v in params.items() if not str(k).startswith("_")}
        super().log_hyperparams(params)
