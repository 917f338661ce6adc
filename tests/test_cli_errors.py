"""Bad input: one clear line on stderr, a non-zero exit, no traceback, nothing written."""

from __future__ import annotations


import pytest

from gen_lightning.cli_errors import condense, find_user_error
from gen_lightning.errors import UserError
from tests.conftest import CONFIGS
from tests.helpers import assert_one_line_error

VAE = str(CONFIGS / "vae" / "mlp_digits.yaml")


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--model.lrr", "1"], ["unknown key 'model.lrr'"]),
        (["--model.beta", "abc"], ["model.beta", "expected float", "abc"]),
        (["--trainer.max_epochs", "abc"], ["trainer.max_epochs", "expected int"]),
        (["--model.net", "foo"], ["model.net", "'mlp', 'conv'", "foo"]),
        (
            ["--data.dataset", "folder", "--data.root", "no/such/folder"],
            ["data.root", "no/such/folder", "does not exist"],
        ),
        (
            ["--data", "gen_lightning.data.TextDataModule", "--data.corpus", "missing.txt"],
            ["data.corpus", "missing.txt"],
        ),
    ],
    ids=["unknown-key", "wrong-type", "wrong-type-optional", "bad-choice", "missing-image-root", "missing-corpus"],
)
def test_bad_input_is_one_line(cli_inprocess, args, fragments):
    cli = cli_inprocess
    result = cli("fit", "--config", VAE, "--trainer.logger", "false", *args)
    assert_one_line_error(result, *fragments)
    assert not (cli.cwd / "runs").exists(), "a failed start must not create a run folder"


def test_empty_corpus_is_one_line(cli):
    # Through the real console-script process: the exit code the shell sees.
    (cli.cwd / "empty.txt").write_text("")
    result = cli("fit", "--config", VAE, "--data", "gen_lightning.data.TextDataModule", "--data.corpus", "empty.txt")
    assert_one_line_error(result, "data.corpus", "empty")


def test_missing_config_file_is_one_line(cli_inprocess):
    cli = cli_inprocess
    result = cli("fit", "--config", "nope.yaml")
    assert_one_line_error(result, "nope.yaml", "does not exist")


def test_image_size_on_the_model_names_the_data_key(cli_inprocess):
    # The model's image size is linked to the data's (gen_lightning/config_links.py): a mismatch cannot be
    # configured any more, and the old key says where the value is set now.
    cli = cli_inprocess
    result = cli("fit", "--config", VAE, "--trainer.logger", "false", "--model.image_size", "32")
    assert_one_line_error(result, "model.image_size is linked to data.image_size", "set data.image_size instead")


def test_condense_handles_nested_union_reports():
    message = (
        'Parser key "model":\n  Does not validate against any of the Union subtypes\n  Errors:\n'
        "    - Parser key \"beta\": Expected a <class 'float'>. Got value: abc\n"
        "    - Expected a <class 'NoneType'>\n  Given value: NestedArg(key='beta', val='abc')"
    )
    assert condense(message).startswith("model.beta: expected float, got abc")


def test_find_user_error_walks_the_cause_chain():
    try:
        try:
            raise UserError("the real problem")
        except UserError as inner:
            raise ValueError("wrapper") from inner
    except ValueError as outer:
        assert str(find_user_error(outer)) == "the real problem"
    assert find_user_error(ValueError("unrelated")) is None


def test_lightning_misconfiguration_is_one_line(cli_inprocess):
    # Lightning refuses automatic gradient clipping for manual optimization; the user sees one line.
    result = cli_inprocess(
        "fit",
        "--config",
        str(CONFIGS / "gan" / "mlp_digits.yaml"),
        "--trainer.logger",
        "false",
        "--trainer.gradient_clip_val",
        "1.0",
        "--trainer.max_steps",
        "2",
    )
    assert_one_line_error(result, "gradient clipping")
