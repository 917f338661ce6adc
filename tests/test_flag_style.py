"""One flag style across verbs (commands/flags.py): the extra verbs take fit's underscores and the dashed alias."""

from __future__ import annotations

import pytest

from gen_lightning.commands.flags import VerbParser, both_spellings
from gen_lightning.cli import main


def test_every_long_option_answers_to_both_spellings():
    assert both_spellings(("--max-new-tokens",)) == ("--max_new_tokens", "--max-new-tokens")
    assert both_spellings(("-o", "--output")) == ("-o", "--output")
    parser = VerbParser(prog="x")
    parser.add_argument("--top-k", type=int)
    group = parser.add_argument_group("g")
    group.add_argument("--num_samples", type=int)
    exclusive = parser.add_mutually_exclusive_group()
    exclusive.add_argument("--no-cache", action="store_true")
    for spelling in (
        ["--top_k", "3", "--num_samples", "2", "--no_cache"],
        ["--top-k", "3", "--num-samples", "2", "--no-cache"],
    ):
        args = parser.parse_args(spelling)
        assert (args.top_k, args.num_samples, args.no_cache) == (3, 2, True)


@pytest.mark.parametrize(
    "flags",
    [["--ckpt_path", "{ckpt}", "--max_new_tokens", "3"], ["--ckpt", "{ckpt}", "--max-new-tokens", "3"]],
    ids=["fit_style", "dashed"],
)
def test_sample_takes_fits_ckpt_path_and_the_dashed_spellings(tmp_path, capsys, flags):
    missing = tmp_path / "missing.ckpt"
    with pytest.raises(SystemExit) as exit_:
        main(["sample", *[f.format(ckpt=missing) for f in flags]])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "unrecognized arguments" not in err, err  # parsed; then the missing file
