"""Is a DeepSpeed checkpoint folder resumable by this run? Checked before DeepSpeed reads it.

ZeRO partitions the optimizer state (and under stage 3 the weights) across the data-parallel ranks, and DeepSpeed
0.19 can load those shards only on the world size that wrote them; on another it fails deep inside the engine
(`ZeRORuntimeException: The checkpoint being loaded used a DP world size of 2 but the current world size is 1`),
after every rank has built its model. A shard file that is missing (a copy cut short, a node's disk lost) fails
the same way. Here both are one line naming the folder, what is wrong and what to do.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gen_lightning.errors import UserError

ENGINES_FILE = "engines.txt"  # per-network engines (strategies/deepspeed_engines.py): their tag folders, in order


def checkpoint_tags(folder: Path) -> list[str]:
    """The tag folders of a DeepSpeed checkpoint: one per network engine, or the one `latest` names."""
    if (folder / ENGINES_FILE).is_file():
        return (folder / ENGINES_FILE).read_text().split()
    if (folder / "latest").is_file():
        return [(folder / "latest").read_text().strip()]
    raise UserError(
        f"'{folder}' is not a DeepSpeed checkpoint folder (no 'latest' or {ENGINES_FILE} file in it); "
        f"give a checkpoint folder a DeepSpeed run wrote"
    )


def saved_world_size(tag_folder: Path) -> int:
    """The data-parallel world size that wrote this tag (DeepSpeed's own record in the model-states file)."""
    model_states = sorted(tag_folder.glob("*mp_rank_00_model_states.pt"))
    if not model_states:
        raise UserError(
            f"DeepSpeed checkpoint '{tag_folder.parent}' misses its model states in {tag_folder.name}/; "
            f"it is incomplete: resume from another checkpoint"
        )
    # DeepSpeed's file holds Python objects (its config); mmap reads only the small record, not the weights.
    # The folder is the run's own output, which DeepSpeed itself loads without weights_only a moment later.
    state = torch.load(model_states[0], map_location="cpu", mmap=True, weights_only=False)
    return int(state["dp_world_size"])


def check_resumable(folder: str | Path, world_size: int) -> None:
    """One line, before any engine reads the folder, when DeepSpeed could not resume it on `world_size` ranks."""
    folder = Path(folder)
    for tag in checkpoint_tags(folder):
        tag_folder = folder / tag
        if not tag_folder.is_dir():
            raise UserError(
                f"DeepSpeed checkpoint '{folder}' misses its folder {tag}/; it is incomplete: resume from "
                f"another checkpoint"
            )
        saved = saved_world_size(tag_folder)
        if saved != world_size:
            raise UserError(
                f"checkpoint '{folder}' was written by DeepSpeed on {saved} processes and this run has {world_size}: "
                f"ZeRO's sharded optimizer state resumes only on the same number, so resume with {saved} processes "
                f"(--trainer.devices x --trainer.num_nodes); for its weights alone (sample, export, "
                f"load_from_checkpoint, any device count) run `gen-lightning convert {folder}`"
            )
        for rank in range(saved):
            if not list(tag_folder.glob(f"*zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")):
                raise UserError(
                    f"DeepSpeed checkpoint '{folder}' misses the optimizer shard of rank {rank} of {saved} "
                    f"in {tag}/; it is incomplete: resume from another checkpoint"
                )
