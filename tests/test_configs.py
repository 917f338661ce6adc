"""Every YAML under configs/ against the real `gen-lightning fit` parser, alone and after each trainer file,
and the model <- data links (gen_lightning/config_links.py) for every family.

One parser for the session (conftest.py fit_parser, built once, ~2 s), then one parse per combination: no training, nothing
instantiated except in the link tests. The sweep files are not CLI configs: test_sweep.py parses every
command they generate through the sweep spec loader and the same CLI.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gen_lightning.errors import UserError
from tests.conftest import CONFIGS

# Files given to `--config`: experiments (model + data + trainer) and top-level groups.
EXPERIMENTS = sorted(
    p for d in ("gan", "vae", "gpt", "lstm", "seq2seq", "evaluator") for p in (CONFIGS / d).glob("*.yaml")
)
TRAINERS = sorted((CONFIGS / "trainer").glob("*.yaml"))
LOGGERS = sorted((CONFIGS / "logger").glob("*.yaml"))
# Files included as the value of one key (`data: ../data/digits.yaml`, a list item of trainer.callbacks).
VALUE_GROUPS = sorted([*(CONFIGS / "data").glob("*.yaml"), *(CONFIGS / "callbacks").glob("*.yaml")])


def ids(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


@pytest.fixture
def parser(fit_parser):
    return fit_parser


def parse(parser, *files: Path, extra: tuple[str, ...] = ()):
    args = ["fit"]
    for f in files:
        args += ["--config", str(f)]
    return parser.parse_args([*args, *extra]).fit


def test_the_config_tree_is_complete():
    assert len(EXPERIMENTS) == 12 and len(TRAINERS) == 8 and LOGGERS and VALUE_GROUPS
    listed = {*EXPERIMENTS, *TRAINERS, *LOGGERS, *VALUE_GROUPS, *(CONFIGS / "sweeps").glob("*.yaml")}
    assert set(CONFIGS.rglob("*.yaml")) == listed, "a YAML file no test parses"


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=ids)
def test_experiment_parses_alone_and_after_every_trainer_file(parser, experiment):
    alone = parse(parser, experiment)
    assert alone.model.class_path.startswith("gen_lightning.models.")
    assert alone.data.class_path.startswith("gen_lightning.data.")
    assert (
        alone.trainer.logger.init_args.group
        == yaml.safe_load(experiment.read_text())["trainer"]["logger"]["init_args"]["group"]
    )
    for (
        trainer
    ) in TRAINERS:  # every key of the trainer file reaches the parsed config (none of them is set by an experiment)
        combined = parse(parser, trainer, experiment)
        for key, value in yaml.safe_load(trainer.read_text())["trainer"].items():
            parsed = combined.trainer[key]
            if isinstance(value, dict):
                assert parsed.class_path == value["class_path"], (trainer.name, key)
                enum_names = {k: getattr(parsed.init_args[k], "name", parsed.init_args[k]) for k in value["init_args"]}
                assert enum_names == value["init_args"], (trainer.name, key)
            else:
                assert parsed == value, (trainer.name, key)
    for logger in LOGGERS:  # the W&B block after the experiment keeps the experiment's group
        with_logger = parse(parser, experiment, logger)
        assert with_logger.trainer.logger.class_path == "gen_lightning.loggers.GenWandbLogger"
        assert with_logger.trainer.logger.init_args.group == alone.trainer.logger.init_args.group


@pytest.mark.parametrize("group", VALUE_GROUPS, ids=ids)
def test_every_value_group_is_included_by_an_experiment_and_parses(parser, group):
    users = [e for e in EXPERIMENTS if f"../{group.parent.name}/{group.name}" in e.read_text()]
    assert users, f"{group} is included by no experiment file"
    config = parse(parser, users[0])
    included = yaml.safe_load(group.read_text())
    if group.parent.name == "data":
        assert config.data.class_path == included["class_path"]
        assert {k: config.data.init_args[k] for k in included["init_args"]} == included["init_args"]
    else:
        (match,) = [c for c in config.trainer.callbacks if c.class_path == included["class_path"]]
        assert {k: match.init_args[k] for k in included["init_args"]} == included["init_args"]


def test_no_experiment_file_sets_a_linked_key_on_the_model():
    from gen_lightning.config_links import LINKED_MODEL_KEYS

    for experiment in EXPERIMENTS:
        model = yaml.safe_load(experiment.read_text())["model"]
        assert not set(model.get("init_args") or {}) & set(LINKED_MODEL_KEYS), experiment


# -- the links ---------------------------------------------------------------------------------------------
def test_sizes_are_linked_on_parse(parser):
    gpt = parse(parser, CONFIGS / "gpt" / "nano_stdlib.yaml", extra=("--data.block_size", "48"))
    assert gpt.model.init_args.block_size == 48
    seq2seq = parse(
        parser,
        CONFIGS / "seq2seq" / "code_summary.yaml",
        extra=("--data.max_source_len", "100", "--data.max_target_len", "30"),
    )
    assert (seq2seq.model.init_args.source_block_size, seq2seq.model.init_args.target_block_size) == (100, 31)


@pytest.mark.parametrize(
    "experiment, extra, expected",
    [
        ("vae/mlp_digits.yaml", ("--data.image_size", "16"), {"image_size": 16, "channels": 1}),
        (
            "gan/dcgan_cifar10.yaml",
            (),
            {"image_size": 32, "channels": 3},
        ),  # cifar10's own channels: data.channels unset
        ("evaluator/digits_classifier.yaml", ("--data.dataset", "synthetic", "--data.channels", "3"), {"channels": 3}),
        (
            "gpt/nano_stdlib.yaml",
            ("--data.tokenizer", "bpe", "--data.vocab_size", "300"),
            {"vocab_size": 300, "block_size": 64},
        ),
        ("lstm/stdlib.yaml", (), {"vocab_size": 257}),
        ("seq2seq/code_summary.yaml", (), {"vocab_size": 2048, "source_block_size": 64, "target_block_size": 65}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_every_family_gets_the_data_values_on_instantiate(parser, experiment, extra, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the logger creates its save_dir
    monkeypatch.setenv("WANDB_MODE", "disabled")
    config = parser.parse_args(["fit", "--config", str(CONFIGS / experiment), *extra])
    init = parser.instantiate_classes(config).fit
    model = init.model
    config = model.net.config if hasattr(getattr(model, "net", None), "config") else None  # the language models' nets
    built = {k: getattr(config, k) if config is not None else model.hparams[k] for k in expected}
    assert built == expected


@pytest.mark.parametrize("how", ["file", "init_args file", "option", "init_args option"])
def test_a_linked_key_on_the_model_is_one_line_naming_the_data_key(parser, how, tmp_path):
    old = tmp_path / "old.yaml"
    model = {"class_path": "gen_lightning.models.GPTModule", "init_args": {"size": "nano"}}
    extra: tuple[str, ...] = ()
    if how == "file":
        model["block_size"] = 32
    elif how == "init_args file":
        model["init_args"]["block_size"] = 32
    else:
        extra = ("--model.init_args.block_size=32",) if how == "init_args option" else ("--model.block_size", "32")
    old.write_text(yaml.safe_dump({"model": model}))
    with pytest.raises(UserError) as err:
        parse(parser, CONFIGS / "gpt" / "nano_stdlib.yaml", old, extra=extra)
    assert str(err.value) == (
        "model.block_size is linked to data.block_size now: remove model.block_size and set data.block_size instead"
    )
