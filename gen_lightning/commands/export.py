"""`gen-lightning export --ckpt X --out DIR`: a GPT checkpoint as a Hugging Face GPT-2 folder.

DIR gets `config.json` + `model.safetensors` that `transformers.GPT2LMHeadModel.from_pretrained(DIR)`
loads (no network), plus the tokenizer: `gen_lightning_tokenizer.json` always (so `gen-lightning sample
--ckpt DIR` and `--model.init_from DIR` work), and `tokenizer.json` for a BPE tokenizer (HF `tokenizers`).
"""

from __future__ import annotations


from gen_lightning.commands.flags import VerbParser
from gen_lightning.errors import UserError
from gen_lightning.outputs import check_output_folder


def main(argv: list[str]) -> int:
    p = VerbParser(prog="gen-lightning export", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--ckpt_path",
        "--ckpt",
        dest="ckpt",
        required=True,
        help="a GPTModule checkpoint written by `gen-lightning fit`",
    )
    p.add_argument("--out", required=True, help="folder to write (created if missing)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of a --out folder that is not empty")
    args = p.parse_args(argv)
    check_output_folder(args.out, "--out", args.overwrite)  # before the checkpoint is read

    from gen_lightning.commands.sample import load_module
    from gen_lightning.models.gpt import GPTModule
    from gen_lightning.models.hf_gpt2 import export_hf_gpt2

    model = load_module(args.ckpt, "cpu")
    if not isinstance(model, GPTModule):
        raise UserError(f"--ckpt holds a {type(model).__name__}; only GPT checkpoints export to the GPT-2 format")
    tokenizer_json = model.tokenizer_json
    eot_id = model.tokenizer.eot_id if tokenizer_json is not None else None
    out = export_hf_gpt2(model.net, args.out, eot_id=eot_id, tokenizer_json=tokenizer_json)
    print(f"wrote {out}/config.json and {out}/model.safetensors (GPT2LMHeadModel)")
    return 0
