"""`gen-lightning convert CKPT_DIR`: a DeepSpeed ZeRO checkpoint folder as one fp32 `.ckpt` file.

Under DeepSpeed every checkpoint (`last.ckpt`, `best-*.ckpt`) is a folder of per-rank shards that only a
DeepSpeed run with the same world size can resume. The converted file holds the full fp32 weights plus the
Lightning state (hyper-parameters, step, callbacks), so `Module.load_from_checkpoint(file)`, `gen-lightning
sample/export --ckpt file` and any single-device run accept it. The gathering itself is DeepSpeed's
`zero_to_fp32`, called through Lightning's `convert_zero_checkpoint_to_fp32_state_dict`.

    gen-lightning convert runs/gen-lightning/<run>/checkpoints/last.ckpt          # -> .../last-fp32.ckpt
    gen-lightning convert runs/.../best-step=900.ckpt -o best.ckpt
"""

from __future__ import annotations

from pathlib import Path

import torch

from gen_lightning.commands.flags import VerbParser
from gen_lightning.errors import UserError
from gen_lightning.outputs import check_output_file
from gen_lightning.strategies.deepspeed_engines import ENGINES_FILE, LIGHTNING_STATE_KEY


def default_output(checkpoint_dir: Path) -> Path:
    return checkpoint_dir.with_name(f"{checkpoint_dir.stem}-fp32.ckpt")


def check_zero_checkpoint(checkpoint_dir: Path) -> None:
    if not checkpoint_dir.exists():
        raise UserError(f"'{checkpoint_dir}' does not exist; give the checkpoint folder a DeepSpeed run wrote")
    if checkpoint_dir.is_file():
        raise UserError(
            f"'{checkpoint_dir}' is already a single-file checkpoint; only DeepSpeed checkpoint folders need converting"
        )
    if not (checkpoint_dir / "latest").is_file() and not (checkpoint_dir / ENGINES_FILE).is_file():
        raise UserError(
            f"'{checkpoint_dir}' is not a DeepSpeed checkpoint folder (no 'latest' or {ENGINES_FILE} file in it); give a `*.ckpt` "
            f"folder from the checkpoints/ of a run trained with a deepspeed_* trainer config"
        )


def convert(checkpoint_dir: str | Path, output: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write the fp32 single-file checkpoint and return its path (an existing `output` only with `overwrite`)."""
    from gen_lightning.strategies.deepspeed_cpu import INSTALL_HINT, deepspeed_available

    checkpoint_dir = Path(checkpoint_dir)
    check_zero_checkpoint(checkpoint_dir)
    check_output_file(
        output or default_output(checkpoint_dir), "-o" if output else "the output", overwrite, example="model-fp32.ckpt"
    )
    if not deepspeed_available():
        raise UserError(f"converting a ZeRO checkpoint needs the deepspeed package; install it with {INSTALL_HINT}")
    from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

    output = Path(output) if output else default_output(checkpoint_dir)
    output.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename: an interrupted conversion never leaves a truncated .ckpt behind.
    partial = output.with_name(output.name + ".partial")
    if (checkpoint_dir / ENGINES_FILE).is_file():
        torch.save(gather_per_network_checkpoint(checkpoint_dir), partial)
    else:
        convert_zero_checkpoint_to_fp32_state_dict(str(checkpoint_dir), str(partial))
    partial.replace(output)
    return output


def gathered_checkpoint(checkpoint_dir: str | Path) -> dict:
    """The converted checkpoint as a dict in memory (what `convert` writes): for evaluating a ZeRO-3 folder."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gen-lightning-convert-") as folder:
        path = convert(checkpoint_dir, Path(folder) / "gathered.ckpt")
        # Written a moment ago by DeepSpeed's own gathering from this run's files: trusted like them.
        return torch.load(path, map_location="cpu", weights_only=False)


def gather_per_network_checkpoint(checkpoint_dir: Path) -> dict:
    """A Lightning checkpoint dict from a folder of per-network engines (gen_lightning.strategies.deepspeed_engines):
    each network's fp32 weights under its name, plus the state outside the engines and the Lightning state
    that the first engine carries as its client state."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint, get_model_state_file

    names = (checkpoint_dir / ENGINES_FILE).read_text().split()
    state_dict = {}
    for name in names:
        network = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=name)
        state_dict.update({f"{name}.{key}": value for key, value in network.items()})
    first = checkpoint_dir / names[0]
    stage3 = any(first.glob("zero_pp_rank_*_model_states.pt"))
    # DeepSpeed's own files hold more than tensors (its config objects): trusted here, they are our run's output.
    client = torch.load(get_model_state_file(str(first), 3 if stage3 else 2), map_location="cpu", weights_only=False)
    checkpoint = client[LIGHTNING_STATE_KEY]
    checkpoint["state_dict"] = {**checkpoint.get("state_dict", {}), **state_dict}
    return checkpoint


def main(argv: list[str]) -> int:
    p = VerbParser(prog="gen-lightning convert", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a DeepSpeed checkpoint folder, e.g. runs/<project>/<run>/checkpoints/last.ckpt")
    p.add_argument("-o", "--output", help="the .ckpt file to write (default: <folder name>-fp32.ckpt beside it)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    args = p.parse_args(argv)
    output = convert(args.checkpoint, args.output, overwrite=args.overwrite)
    print(f"wrote {output} (fp32 weights + Lightning state; load_from_checkpoint accepts it)")
    return 0
