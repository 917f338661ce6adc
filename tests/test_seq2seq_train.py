"""Seq2seq through the real CLI: a tiny run and its files, exact resume, bad input, `sample`.

`tiny_args(folder)` is the ~10-20 s run other tests (the DDP/DeepSpeed checks, the conformance matrix) reuse:
a JSONL file of 400 made-up function -> summary pairs (360 train, 40 validation), byte tokenizer, a 1 + 1
block model 32 wide.
Validation: 39 pairs in batches of 10 -> 4 batches whichever the number of ranks (1 or 2), so per-pair outputs,
and with them every metric, are the same on 1 and 2 processes.
"""

from __future__ import annotations

import json
import random

import pytest
import torch

from gen_lightning.cli import main
from tests.conftest import CONFIGS
from tests.helpers import assert_one_line_error

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
VERBS = ["add", "remove", "return", "check", "build", "parse", "close", "open"]
NOUNS = ["item", "entry", "file", "name", "value", "buffer", "socket", "widget", "record", "path"]


def toy_pairs(n: int = 400, seed: int = 0) -> list[dict[str, str]]:
    """Made-up functions whose summary is written in their name: learnable, and of varied lengths."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        verb, noun = rng.choice(VERBS), rng.choice(NOUNS)
        body = "".join(f"    x{j} = {noun}[{j}]\n" for j in range(rng.randint(0, 2)))
        source = f"def {verb}_{noun}(self, {noun}):\n{body}    return self._{verb}({noun})"
        pairs.append({"source": source, "target": f"{verb.capitalize()} the {noun}."})
    return pairs


def write_pairs(folder, pairs) -> str:
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return str(path)


def tiny_args(folder, train_file: str | None = None) -> list[str]:
    """Config + overrides of a ~10-20 s seq2seq run (its data file is written into `folder`)."""
    return [
        "--config",
        str(CONFIGS / "seq2seq" / "code_summary.yaml"),
        "--data.train_file",
        train_file or write_pairs(folder, toy_pairs()),
        "--data.max_val_pairs",
        "39",
        "--data.tokenizer",
        "byte",
        "--data.max_source_len",
        "128",
        "--data.max_target_len",
        "24",
        "--data.batch_size",
        "10",
        "--data.cache_dir",
        str(folder / "cache"),
        "--model.n_encoder_layer",
        "1",
        "--model.n_decoder_layer",
        "1",
        "--model.n_head",
        "2",
        "--model.n_embd",
        "32",
        "--model.num_beams",
        "2",
        "--model.max_new_tokens",
        "16",
        "--model.val_generate_batches",
        "null",
        "--model.warmup_steps",
        "5",
        "--model.lr",
        "3e-3",
    ]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr("sys.argv", ["gen-lightning"])
    return tmp_path


def fit(root, steps, *extra, folder=None):
    main(
        [
            "fit",
            *tiny_args(folder or root.parent),
            *QUIET,
            "--trainer.logger",
            "false",
            "--trainer.callbacks",
            "[]",
            "--trainer.default_root_dir",
            str(root),
            "--trainer.max_steps",
            str(steps),
            *extra,
        ]
    )


def test_tiny_run_trains_logs_and_writes_the_translation_table(in_tmp):
    main(
        [
            "fit",
            *tiny_args(in_tmp),
            *QUIET,
            "--trainer.max_steps",
            "30",
            "--trainer.val_check_interval",
            "15",
            "--trainer.logger",
            "lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.save_dir",
            "runs",
        ]
    )
    (metrics_csv,) = (in_tmp / "runs").rglob("metrics.csv")
    rows = metrics_csv.read_text().splitlines()
    header = rows[0].split(",")
    for key in ("train/loss", "val/loss", "val/perplexity", "val/bleu", "val/chrf", "val/exact_match"):
        assert key in header, key
    col = {k: header.index(k) for k in header}
    losses = [float(r.split(",")[col["train/loss"]]) for r in rows[1:] if r.split(",")[col["train/loss"]]]
    assert losses[-1] < losses[0] - 0.5, losses  # it learns
    bleu = [float(r.split(",")[col["val/bleu"]]) for r in rows[1:] if r.split(",")[col["val/bleu"]]]
    assert len(bleu) == 2 and all(0.0 <= b <= 100.0 for b in bleu)
    (table,) = (in_tmp / "runs").rglob("samples/translations.md")
    text = table.read_text()
    assert text.count("## step") == 2 and text.count("- reference: ") == 16 and "def " in text
    (last,) = (in_tmp / "runs").rglob("last.ckpt")
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 30 and json.loads(checkpoint["tokenizer"]) == {"kind": "byte"}
    assert any(k.startswith("val/bleu") for k in str(checkpoint["callbacks"]).split("'"))  # best by BLEU


def _max_difference(a_path, b_path) -> float:
    a, b = (torch.load(p, weights_only=True) for p in (a_path, b_path))
    assert a["global_step"] == b["global_step"] and a["state_dict"].keys() == b["state_dict"].keys()
    return max((a["state_dict"][k].double() - b["state_dict"][k].double()).abs().max().item() for k in a["state_dict"])


def test_resume_gives_the_same_parameters(in_tmp):
    # 100 training pairs in batches of 10: 10 steps per epoch; 8 + 8 steps cross the epoch boundary and the
    # validations at steps 5, 10 and 15; dropout (RNG state), warm-up + cosine (scheduler), bucket order (loader).
    extra = [
        "--data.max_train_pairs",
        "100",
        "--trainer.val_check_interval",
        "5",
        "--model.dropout",
        "0.1",
        "--model.decay_steps",
        "16",
        "--model.val_generate_batches",
        "1",
    ]
    fit(in_tmp / "straight", 16, *extra)
    fit(in_tmp / "resumed", 8, *extra)
    half = torch.load(in_tmp / "resumed/checkpoints/last.ckpt", weights_only=True)
    assert half["global_step"] == 8
    fit(in_tmp / "resumed", 16, *extra, "--ckpt_path", "last")
    diff = _max_difference(in_tmp / "straight/checkpoints/last.ckpt", in_tmp / "resumed/checkpoints/last.ckpt")
    assert diff <= 1e-6, f"parameters differ by {diff} after resume"
    resumed = torch.load(in_tmp / "resumed/checkpoints/last.ckpt", weights_only=True)
    moved = max((resumed["state_dict"][k] - half["state_dict"][k]).abs().max().item() for k in half["state_dict"])
    assert moved > 1e-4  # the second half really trained


BAD = [
    (
        '{"source": "def f(): pass", "target": "F."}\n{"source": "def g(): pass"}\n',
        "pairs.jsonl",
        ["pairs.jsonl:2", 'no "target" field'],
    ),
    (
        '{"source": "def f(): pass", "target": "F."}\n{"source": "", "target": "G."}\n',
        "pairs.jsonl",
        ["pairs.jsonl:2", "empty source"],
    ),
    (
        "def f(): pass\tF.\ndef g(): pass\tG.\textra\n",
        "pairs.tsv",
        ["pairs.tsv:2", "3 tab-separated columns, expected 2"],
    ),
]


@pytest.mark.parametrize("content, name, fragments", BAD, ids=["no-target", "empty-source", "tsv-columns"])
def test_bad_pair_files_are_one_line_and_write_nothing(cli_inprocess, content, name, fragments):
    (cli_inprocess.cwd / name).write_text(content)
    args = tiny_args(cli_inprocess.cwd, train_file=str(cli_inprocess.cwd / name))
    before = sorted(p.name for p in cli_inprocess.cwd.rglob("*"))
    result = cli_inprocess("fit", *args, *QUIET, "--trainer.max_steps", "2", "--trainer.logger", "false")
    assert_one_line_error(result, *fragments)
    assert sorted(p.name for p in cli_inprocess.cwd.rglob("*")) == before, "nothing written"


def test_a_source_over_the_limit_is_one_line_and_writes_no_data(cli_inprocess):
    args = tiny_args(cli_inprocess.cwd)
    pairs = toy_pairs(50)
    pairs[7]["source"] = "def long(self):\n" + "    x = 1\n" * 20
    write_pairs(cli_inprocess.cwd, pairs)
    result = cli_inprocess(
        "fit", *args, *QUIET, "--data.truncate", "false", "--trainer.max_steps", "2", "--trainer.logger", "false"
    )
    assert_one_line_error(
        result, "pairs.jsonl:8: the source is 216 tokens, longer than data.max_source_len 128", "set data.truncate true"
    )
    assert not (cli_inprocess.cwd / "cache").exists() and not list(cli_inprocess.cwd.rglob("*.ckpt"))
    assert not [p for p in cli_inprocess.cwd.rglob("*") if p.is_file() and p.name != "pairs.jsonl"]


def test_sample_writes_a_summary_of_the_prompt(in_tmp, capsys):
    fit(in_tmp / "run", 6)
    from gen_lightning.commands import sample

    capsys.readouterr()
    code = sample.main(
        [
            "--ckpt",
            str(in_tmp / "run/checkpoints/last.ckpt"),
            "--prompt",
            "def close_file(self, file):\n    return self._close(file)",
            "--num-beams",
            "3",
            "--max-new-tokens",
            "12",
            "--device",
            "cpu",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and out.strip() and "def close_file" not in out  # the summary, not the prompt
    sampled = [
        sample.main(
            [
                "--ckpt",
                str(in_tmp / "run/checkpoints/last.ckpt"),
                "--prompt",
                "def f(x): pass",
                "--temperature",
                "1.0",
                "--top-k",
                "10",
                "--seed",
                "4",
                "--num-samples",
                "2",
                "--device",
                "cpu",
            ]
        )
        for _ in range(2)
    ]
    outs = capsys.readouterr().out.split("-" * 40)
    assert sampled == [0, 0] and len(outs) == 3
