"""`gen-lightning sample --ckpt PATH`: text from a language model, a PNG grid from an image model.

Any checkpoint written by `gen-lightning fit` works without naming its family: LightningCLI stores the
model's class path in `hyper_parameters["_class_path"]`, and `load_from_checkpoint` rebuilds the model
from the saved hyper-parameters. Checkpoints are read with `weights_only=True` (no pickled code runs).
A Hugging Face GPT-2 folder (config.json + model.safetensors, e.g. from `gen-lightning export`) works too.

  gen-lightning sample --ckpt runs/.../last.ckpt --prompt "def fib(n):" --max-new-tokens 200
  gen-lightning sample --ckpt runs/.../last.ckpt --n 64 --out grid.png      # GAN / VAE
  gen-lightning sample --ckpt runs/.../last.ckpt --labels 3,3,7              # conditional GAN / VAE: these classes
  gen-lightning sample --ckpt runs/.../last.ckpt --labels all --nrow 10      # one row of 10 per class
  gen-lightning sample --ckpt runs/.../last.ckpt --prompt "def f(x): ..." --num-beams 4   # seq2seq: the source
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
import torch

from gen_lightning.commands.flags import VerbParser
from gen_lightning.capabilities import GeneratesText, SamplesImages, SamplesImagesByClass, TranslatesText
from gen_lightning.errors import UserError
from gen_lightning.outputs import check_output_file


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device here; use --device cpu")
    return torch.device(name)


def load_module(path: str, device: str | torch.device = "cpu"):
    """The LightningModule saved in checkpoint `path` (any family), or a GPT from a HF GPT-2 folder; in eval mode."""
    from gen_lightning.models.hf_gpt2 import is_hf_gpt2_dir

    device = torch.device(device)
    source = Path(path).expanduser()
    if is_hf_gpt2_dir(source):
        return _gpt_from_hf_dir(source).to(device).eval()
    if source.is_dir():
        raise UserError(
            f"--ckpt '{path}' is a folder, not a checkpoint file or a Hugging Face GPT-2 export (config.json "
            f"+ model.safetensors); give a .ckpt file (runs/<project>/<run>/checkpoints/)"
        )
    if not source.is_file():
        raise UserError(f"--ckpt '{path}' does not exist; give a .ckpt file (runs/<project>/<run>/checkpoints/)")
    try:
        # mmap: only the hyper-parameters are read here, not the weights.
        checkpoint = torch.load(source, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(f"--ckpt '{path}' is not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(checkpoint, dict):
        raise UserError(
            f"--ckpt '{path}' is not a Lightning checkpoint (it holds a {type(checkpoint).__name__}, not a "
            f"dict); give a .ckpt file written by `gen-lightning fit`"
        )
    hparams = checkpoint.get("hyper_parameters", {})
    class_path = hparams.get("_class_path")
    if not class_path:
        raise UserError(f"--ckpt '{path}' does not name its model class (not written by `gen-lightning fit`)")
    module_name, _, class_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    model = cls.load_from_checkpoint(source, map_location=device, weights_only=True)
    return model.eval()


def _gpt_from_hf_dir(directory: Path):
    from gen_lightning.models.gpt import GPTModule
    from gen_lightning.models.hf_gpt2 import TOKENIZER_FILE, load_hf_gpt2, read_exported_tokenizer

    config, state = load_hf_gpt2(directory)
    model = GPTModule(
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_embd=config.n_embd,
        block_size=config.block_size,
        vocab_size=config.vocab_size,
    )
    model.net.load_state_dict(state)
    model.tokenizer_json = read_exported_tokenizer(directory)
    if model.tokenizer_json is None:
        raise UserError(f"'{directory}' has no {TOKENIZER_FILE}: cannot turn tokens into text")
    return model


def _parser() -> argparse.ArgumentParser:
    p = VerbParser(prog="gen-lightning sample", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--ckpt_path", "--ckpt", dest="ckpt", required=True, help="checkpoint (.ckpt) or Hugging Face GPT-2 folder"
    )
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int, default=0)
    text = p.add_argument_group("language models")
    text.add_argument("--prompt", default="", help="text to continue; empty = start a new document")
    text.add_argument("--max-new-tokens", type=int, default=200)
    text.add_argument("--num-samples", type=int, default=1)
    text.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    text.add_argument("--top-k", type=int, default=None)
    text.add_argument("--top-p", type=float, default=None)
    text.add_argument("--no-cache", action="store_true", help="recompute the whole context every token")
    text.add_argument("--no-stop", action="store_true", help="do not stop at the end-of-text token")
    text.add_argument(
        "--num-beams",
        type=int,
        default=1,
        help="encoder-decoder models: beam search with this many beams (1 = greedy/sampling)",
    )
    image = p.add_argument_group("image models")
    image.add_argument("--n", type=int, default=None, help="number of images (default 64)")
    image.add_argument(
        "--nrow", type=int, default=None, help="images per grid row (default sqrt(n); 8 with --labels all)"
    )
    image.add_argument(
        "--labels",
        default=None,
        help="class-conditional models: the class of each image (3,3,7 = three images), or 'all' = "
        "one row of --nrow images per class; default: classes 0, 1, ... in turn",
    )
    image.add_argument("--out", default=None, help="PNG file to write (default samples.png)")
    image.add_argument("--overwrite", action="store_true", help="replace the --out file if it exists")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.out is not None:  # named: checked before the model is loaded (the default only if images are drawn)
        check_output_file(args.out, "--out", args.overwrite)
    device = _device(args.device)
    model = load_module(args.ckpt, device)
    if isinstance(model, TranslatesText):  # encoder-decoder: --prompt is the source, the output its target
        return _translate(model, args, torch.Generator(device=device).manual_seed(args.seed))
    if isinstance(model, GeneratesText):  # token sampling happens on the model's device
        if args.labels is not None:
            raise UserError(f"--labels is for class-conditional image models; {type(model).__name__} generates text")
        return _sample_text(model, args, torch.Generator(device=device).manual_seed(args.seed))
    if isinstance(model, SamplesImages):  # image models draw their latents on the CPU (same images on any device)
        return _sample_images(model, args, torch.Generator().manual_seed(args.seed))
    raise UserError(f"{type(model).__name__} can neither generate text nor sample images")


def _sample_text(model, args, generator: torch.Generator) -> int:
    if args.temperature < 0 or args.max_new_tokens < 1 or args.num_samples < 1:
        raise UserError("--temperature must be >= 0, --max-new-tokens and --num-samples >= 1")
    if args.top_p is not None and not 0.0 < args.top_p <= 1.0:
        raise UserError(f"--top-p must be in (0, 1], got {args.top_p}")
    texts = model.generate_text(
        args.prompt,
        args.max_new_tokens,
        num_samples=args.num_samples,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        stop_at_eot=not args.no_stop,
        use_cache=not args.no_cache,
        generator=generator,
    )
    for i, text in enumerate(texts):
        if i:
            print("\n" + "-" * 40)
        print(args.prompt + text)
    sys.stdout.flush()
    return 0


def parse_labels(spec: str, model, per_class: int) -> torch.Tensor:
    """The class of each image `--labels` asks for ('all': `per_class` of each class, class by class); every
    mistake is one UserError, raised before anything is drawn or written."""
    classes = model.num_classes if isinstance(model, SamplesImagesByClass) else 0
    if classes == 0:
        raise UserError(
            f"--labels: this {type(model).__name__} is unconditional (model.num_classes 0); sample it without --labels"
        )
    if spec.strip() == "all":
        return torch.arange(classes).repeat_interleave(per_class)
    try:
        labels = [int(part) for part in spec.split(",")]
    except ValueError:
        raise UserError(
            f"--labels must be class indices separated by commas (e.g. 3,3,7) or 'all', got '{spec}'"
        ) from None
    wrong = [label for label in labels if not 0 <= label < classes]
    if wrong:
        raise UserError(f"--labels {wrong[0]}: this {type(model).__name__} knows classes 0..{classes - 1}")
    return torch.tensor(labels)


def _translate(model, args, generator: torch.Generator) -> int:
    if not args.prompt.strip():
        raise UserError("--prompt: an encoder-decoder model needs a source text to write a target for")
    if args.temperature < 0 or args.max_new_tokens < 1 or args.num_samples < 1 or args.num_beams < 1:
        raise UserError("--temperature must be >= 0, --max-new-tokens, --num-samples and --num-beams >= 1")
    texts = model.generate_targets(
        [args.prompt] * args.num_samples,
        args.max_new_tokens,
        generator=generator,
        num_beams=args.num_beams,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        use_cache=not args.no_cache,
    )
    print(("\n" + "-" * 40 + "\n").join(texts))
    sys.stdout.flush()
    return 0


def _sample_images(model, args, generator: torch.Generator) -> int:
    from torchvision.utils import save_image

    if args.nrow is not None and args.nrow < 1:
        raise UserError(f"--nrow must be >= 1, got {args.nrow}")
    every_class = args.labels is not None and args.labels.strip() == "all"
    nrow = args.nrow or (8 if every_class else None)  # --labels all: one row per class
    labels, what = None, ""
    if args.labels is not None:
        if args.n is not None:
            raise UserError(
                "--labels sets the number of images (one per label, or --nrow per class with 'all'); drop --n"
            )
        labels = parse_labels(args.labels, model, nrow)
        what = f" (one row per class 0..{model.num_classes - 1})" if every_class else f" (classes {args.labels})"
    n = len(labels) if labels is not None else (64 if args.n is None else args.n)
    if n < 1:
        raise UserError(f"--n must be >= 1, got {n}")
    out = check_output_file(args.out or "samples.png", "--out", args.overwrite)
    with torch.no_grad():
        images = (
            model.sample(n, generator=generator)
            if labels is None
            else model.sample(n, generator=generator, labels=labels)
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    images = (images.float().cpu().clamp(-1, 1) + 1) / 2  # [-1, 1] -> [0, 1]
    save_image(images, out, nrow=nrow or max(1, round(n**0.5)), padding=2)
    print(f"wrote {n} samples to {out}{what}")
    return 0
