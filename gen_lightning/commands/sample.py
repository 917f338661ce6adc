"""`gen-lightning sample --ckpt PATH`: text from a language model, a PNG grid from an image model.

Any checkpoint written by `gen-lightning fit` works without naming its family: LightningCLI stores the
model's class path in `hyper_parameters["_class_path"]`, and `load_from_checkpoint` rebuilds the model
from the saved hyper-parameters. Checkpoints are read with `weights_only=True` (no pickled code runs).
A Hugging Face GPT-2 folder (config.json + model.safetensors, e.g. from `gen-lightning export`) works too.

  gen-lightning sample --ckpt runs/.../last.ckpt --prompt "def fib(n):" --max-new-tokens 200
  gen-lightning sample --ckpt runs/.../last.ckpt --n 64 --out grid.png      # GAN / VAE
  gen-lightning sample --ckpt runs/.../last.ckpt --prompt "def f(x): ..." --num-beams 4   # seq2seq: the source
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
import torch

from gen_lightning.capabilities import TranslatesText
from gen_lightning.errors import UserError


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
    if not source.is_file():
        raise UserError(f"--ckpt '{path}' does not exist; give a .ckpt file (runs/<project>/<run>/checkpoints/)")
    try:
        # mmap: only the hyper-parameters are read here, not the weights.
        hparams = torch.load(source, map_location="cpu", weights_only=True, mmap=True).get("hyper_parameters", {})
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(f"--ckpt '{path}' is not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from None
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
    model = GPTModule(n_layer=config.n_layer, n_head=config.n_head, n_embd=config.n_embd,
                      block_size=config.block_size, vocab_size=config.vocab_size)
    model.net.load_state_dict(state)
    model.tokenizer_json = read_exported_tokenizer(directory)
    if model.tokenizer_json is None:
        raise UserError(f"'{directory}' has no {TOKENIZER_FILE}: cannot turn tokens into text")
    return model


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gen-lightning sample", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="checkpoint (.ckpt) or Hugging Face GPT-2 folder")
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
    text.add_argument("--num-beams", type=int, default=1,
                      help="encoder-decoder models: beam search with this many beams (1 = greedy/sampling)")
    image = p.add_argument_group("image models")
    image.add_argument("--n", type=int, default=64, help="number of images")
    image.add_argument("--nrow", type=int, default=None, help="images per grid row (default sqrt(n))")
    image.add_argument("--out", default="samples.png", help="PNG file to write")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    device = _device(args.device)
    model = load_module(args.ckpt, device)
    if isinstance(model, TranslatesText):  # encoder-decoder: --prompt is the source, the output its target
        return _translate(model, args, torch.Generator(device=device).manual_seed(args.seed))
    if hasattr(model, "generate_text"):  # token sampling happens on the model's device
        return _sample_text(model, args, torch.Generator(device=device).manual_seed(args.seed))
    if hasattr(model, "sample"):  # image models draw their latents on the CPU (same images on any device)
        return _sample_images(model, args, torch.Generator().manual_seed(args.seed))
    raise UserError(f"{type(model).__name__} can neither generate text nor sample images")


def _sample_text(model, args, generator: torch.Generator) -> int:
    if args.temperature < 0 or args.max_new_tokens < 1 or args.num_samples < 1:
        raise UserError("--temperature must be >= 0, --max-new-tokens and --num-samples >= 1")
    if args.top_p is not None and not 0.0 < args.top_p <= 1.0:
        raise UserError(f"--top-p must be in (0, 1], got {args.top_p}")
    texts = model.generate_text(
        args.prompt, args.max_new_tokens, num_samples=args.num_samples, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, stop_at_eot=not args.no_stop, use_cache=not args.no_cache,
        generator=generator,
    )
    for i, text in enumerate(texts):
        if i:
            print("\n" + "-" * 40)
        print(args.prompt + text)
    sys.stdout.flush()
    return 0


def _translate(model, args, generator: torch.Generator) -> int:
    if not args.prompt.strip():
        raise UserError("--prompt: an encoder-decoder model needs a source text to write a target for")
    if args.temperature < 0 or args.max_new_tokens < 1 or args.num_samples < 1 or args.num_beams < 1:
        raise UserError("--temperature must be >= 0, --max-new-tokens, --num-samples and --num-beams >= 1")
    texts = model.generate_targets(
        [args.prompt] * args.num_samples, args.max_new_tokens, generator=generator, num_beams=args.num_beams,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, use_cache=not args.no_cache,
    )
    print(("\n" + "-" * 40 + "\n").join(texts))
    sys.stdout.flush()
    return 0


def _sample_images(model, args, generator: torch.Generator) -> int:
    from torchvision.utils import save_image

    if args.n < 1:
        raise UserError(f"--n must be >= 1, got {args.n}")
    with torch.no_grad():
        images = model.sample(args.n, generator=generator)
    nrow = args.nrow or max(1, round(args.n ** 0.5))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image((images.float().cpu().clamp(-1, 1) + 1) / 2, out, nrow=nrow, padding=2)  # [-1, 1] -> [0, 1]
    print(f"wrote {args.n} samples to {out}")
    return 0
