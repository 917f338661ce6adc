"""Keys the model and the data must agree on are set once, on the data, and linked to the model.

LightningCLI's `link_arguments` (jsonargparse) does the copying; this module only lists the links and says
in one line when a config still sets a linked key on the model. A link whose source or target the chosen
classes lack is skipped by jsonargparse (a GPT has no `image_size`, an LSTM no `block_size`), so one table
serves every family.

- on parse: sizes the user writes on the data (`block_size`, `max_source_len`, `max_target_len`);
- on instantiate: what the data computes (the tokenizer's `vocab_size`; `image_size` and `channels`, which
  default to the dataset's own when unset).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from gen_lightning.errors import UserError


def _plus_start_token(max_target_len: int) -> int:
    # The decoder reads the start token before the target: one position more than the longest target.
    return max_target_len + 1


class Link(NamedTuple):
    source: str  # on parse: the data's init argument; on instantiate: the data object's attribute
    target: str  # the model's init argument
    apply_on: str
    compute_fn: Callable | None = None
    follows: str = ""  # what the user sets instead, for the message; default data.<source>


LINKS = (
    Link("image_size", "image_size", "instantiate"),
    Link("channels", "channels", "instantiate"),
    Link(
        "vocab_size",
        "vocab_size",
        "instantiate",
        follows="the data's tokenizer (data.tokenizer; data.vocab_size for bpe)",
    ),
    Link("block_size", "block_size", "parse"),
    Link("max_source_len", "source_block_size", "parse"),
    Link(
        "max_target_len",
        "target_block_size",
        "parse",
        _plus_start_token,
        follows="data.max_target_len + 1 (the start token)",
    ),
)
LINKED_MODEL_KEYS = {link.target: link for link in LINKS}


def link_data_to_model(parser) -> None:
    for link in LINKS:
        source = f"data.{link.source}" if link.apply_on == "instantiate" else f"data.init_args.{link.source}"
        parser.link_arguments(
            source, f"model.init_args.{link.target}", compute_fn=link.compute_fn, apply_on=link.apply_on
        )


def linked_key_error(key: str) -> UserError:
    link = LINKED_MODEL_KEYS[key]
    return UserError(
        f"model.{key} is linked to {link.follows or 'data.' + link.source} now: remove model.{key} "
        f"and set data.{link.source} instead"
    )


def _model_keys_set(config) -> list[str]:
    """Linked keys a raw (unparsed) config sets on the model: `model.K` or `model.init_args.K`."""
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict):
        return []
    init_args = model.get("init_args") if isinstance(model.get("init_args"), dict) else {}
    return [key for key in LINKED_MODEL_KEYS if key in model or key in init_args]


_OPTION = "--model."


def _model_keys_on_command_line(args) -> list[str]:
    found = []
    for arg in args:
        if not arg.startswith(_OPTION):
            continue
        key = arg[len(_OPTION) :].split("=", 1)[0].removeprefix("init_args.")
        if key in LINKED_MODEL_KEYS:
            found.append(key)
    return found


class RefusesLinkedModelKeys:
    """Parser mixin: a config file or command line that still sets a linked key on the model gets one line.

    jsonargparse itself would silently overwrite the value with the linked one (a link target inside a
    subclass's init_args stays settable), so the check looks at what the user wrote, before defaults merge:
    config files as loaded, command-line options as given."""

    def parse_args(self, args=None, *rest, **kwargs):
        import sys

        for key in _model_keys_on_command_line(sys.argv[1:] if args is None else args):
            raise linked_key_error(key)
        return super().parse_args(args, *rest, **kwargs)

    def _load_config_parser_mode(self, content, path="", ext_vars=None, prev_cfg=None):
        import yaml

        try:
            raw = yaml.safe_load(content)
        except yaml.YAMLError:
            raw = None  # jsonargparse reports the syntax error in its own words
        for key in _model_keys_set(raw):
            raise linked_key_error(key)
        return super()._load_config_parser_mode(content, path, ext_vars, prev_cfg)
