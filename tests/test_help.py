"""`--help` is the reference: every `__init__` argument of every class a config can name has a help text.

LightningCLI (jsonargparse + docstring-parser) turns each argument's line in the class's Google-style `Args:`
section into its help; an argument without one shows only "(type: ..., default: ...)". The test reads the
help the CLI prints: `gen-lightning fit --help` once as the console script, and `--model.help <class>`
(`--data.help`, `--trainer.callbacks.help`, `--trainer.logger.help`) for each class from the same parser,
in-process (one parser, ~0.1 s a class instead of a Lightning start-up each).

Strategies are not listed: DeepSpeedCPUStrategy and SubmoduleDDPStrategy take Lightning's arguments
unchanged (their help is Lightning's own).
"""

from __future__ import annotations

import contextlib
import io
import re

import pytest

from tests.conftest import REPO, cli_env

MODELS = [
    "gen_lightning.models.GANModule",
    "gen_lightning.models.VAEModule",
    "gen_lightning.models.GPTModule",
    "gen_lightning.models.LSTMModule",
    "gen_lightning.models.Seq2SeqModule",
    "gen_lightning.models.classifier.ClassifierModule",
]
DATA = [
    "gen_lightning.data.ImageDataModule",
    "gen_lightning.data.TextDataModule",
    "gen_lightning.data.PairedTextDataModule",
]
CALLBACKS = [
    "gen_lightning.callbacks.GenerativeMetrics",
    "gen_lightning.callbacks.ImageSamples",
    "gen_lightning.callbacks.TextSamples",
    "gen_lightning.callbacks.TranslationSamples",
    "gen_lightning.callbacks.OptunaPruning",
    "gen_lightning.callbacks.progress_bar.GenProgressBar",
]
LOGGERS = ["gen_lightning.loggers.GenWandbLogger"]
# Always-on callbacks: their arguments are top-level keys of `fit --help` (gen_lightning/cli.py).
BUILT_IN = {
    "checkpoint": "gen_lightning.callbacks.GenCheckpoint",
    "lr_monitor": "gen_lightning.callbacks.GenLearningRateMonitor",
    "throughput": "gen_lightning.callbacks.GenThroughput",
    "gpu_memory": "gen_lightning.callbacks.GPUMemory",
    "divergence": "gen_lightning.callbacks.divergence.DivergenceGuard",
    "preemption": "gen_lightning.callbacks.preemption.PreemptionCheckpoint",
    "rng_state": "gen_lightning.callbacks.rng_state.RNGState",
}

_OPTION = re.compile(r"^  (--[\w.]+)(?: \S+)?(?:, --[\w.]+\+ \S+)?(?:  +(.*))?$")  # a list: also `--key+`


def help_texts(text: str) -> dict[str, str]:
    """`--option` -> its help text with the "(type: ..., default: ...)" tail removed."""
    entries: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        match = _OPTION.match(line)
        if match:
            current = match.group(1)
            entries[current] = [match.group(2) or ""]
        elif current and line.startswith(" " * 24):
            entries[current].append(line.strip())
        else:
            current = None
    joined = {k: " ".join(v).strip() for k, v in entries.items()}
    return {k: re.sub(r"\((required, )?type: .*$", "", v).strip() for k, v in joined.items()}


def arguments(path: str) -> list[str]:
    """The class's `__init__` arguments as the CLI resolves them (jsonargparse's own resolver)."""
    import importlib

    from jsonargparse._parameter_resolvers import get_signature_parameters

    module, name = path.rsplit(".", 1)
    return [p.name for p in get_signature_parameters(getattr(importlib.import_module(module), name))]


@pytest.fixture
def parser(fit_parser):
    return fit_parser


def printed_help(parser, *args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        parser.parse_args(["fit", *args])
    assert exit_.value.code == 0, out.getvalue()[-2000:]
    return out.getvalue()


def assert_documented(texts: dict[str, str], prefix: str, path: str) -> None:
    names = arguments(path)
    # A dataclass argument (RichProgressBar's theme) is a group of options, each with its own help.
    nested = lambda n: any(k.startswith(f"{prefix}.{n}.") and t for k, t in texts.items())  # noqa: E731
    undocumented = [n for n in names if not texts.get(f"{prefix}.{n}") and not nested(n)]
    assert not undocumented, f"{path}: no help for {undocumented}"


@pytest.mark.parametrize(
    "key, path",
    [
        *[("model", p) for p in MODELS],
        *[("data", p) for p in DATA],
        *[("trainer.callbacks", p) for p in CALLBACKS],
        *[("trainer.logger", p) for p in LOGGERS],
    ],
    ids=lambda v: v.rsplit(".", 1)[-1],
)
def test_every_argument_of_a_configurable_class_has_help(parser, key, path):
    texts = help_texts(printed_help(parser, f"--{key}.help", path))
    assert bool(texts) == bool(arguments(path)), "the help lists other options than the class's arguments"
    assert_documented(texts, f"--{key}", path)


def test_fit_help_documents_the_built_in_callbacks():
    import subprocess

    result = subprocess.run(
        ["gen-lightning", "fit", "--help"],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    texts = help_texts(result.stdout)
    assert texts["--trainer.max_steps"]  # Lightning's own Trainer arguments come with their help too
    for key, path in BUILT_IN.items():
        assert_documented(texts, f"--{key}", path)
    # A linked key says where it comes from (gen_lightning/config_links.py).
    for link in (
        "data.init_args.block_size --> model.init_args.block_size [applied on parse]",
        "data.vocab_size --> model.init_args.vocab_size [applied on instantiate]",
    ):
        assert link in result.stdout
