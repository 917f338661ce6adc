"""A seq2seq checkpoint on the whole validation split: greedy vs beam search, and the constant baseline.

    python benchmarks/seq2seq_eval.py --ckpt runs/.../last.ckpt [--beams 1 4] [--max-pairs N] \
        -- --config configs/seq2seq/code_summary.yaml [other gen-lightning overrides for the data]

Prints corpus SacreBLEU and chrF (torchmetrics, 0-100) and exact match of the model's outputs for each
beam size, next to the baseline that always outputs the most frequent target sentence of the train split,
scored against the same references. The data are built from the config after `--` (as `gen-lightning
validate` would), the weights and tokenizer come from the checkpoint. Single process.
Why not `gen-lightning validate --model.num_beams 1`: with --ckpt_path, LightningCLI re-applies the
checkpoint's own hyper-parameters over the command line, so the beam size cannot be changed that way.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import torch
from torchmetrics.text import CHRFScore, SacreBLEUScore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gen_lightning.cli import build_cli  # noqa: E402
from gen_lightning.data.buckets import IGNORE_INDEX  # noqa: E402
from gen_lightning.models.nets.seq2seq import until_stop  # noqa: E402


def scores(outputs: list[str], references: list[str]) -> dict[str, float]:
    bleu, chrf = SacreBLEUScore(), CHRFScore()
    bleu.update(outputs, [[r] for r in references])
    chrf.update(outputs, [[r] for r in references])
    exact = sum(o.strip() == r.strip() for o, r in zip(outputs, references)) / len(references)
    return {"bleu": 100 * float(bleu.compute()), "chrf": 100 * float(chrf.compute()), "exact": exact}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--beams", type=int, nargs="+", default=[1, 4])
    p.add_argument("--max-pairs", type=int, default=None, help="score only the first N validation pairs")
    args, rest = p.parse_known_args()
    rest = [a for a in rest if a != "--"]
    torch.set_num_threads(1)
    cli = build_cli([*rest, "--trainer.logger", "false"], run=False)
    model, data = cli.model, cli.datamodule
    checkpoint = torch.load(args.ckpt, map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint["state_dict"])
    model.tokenizer_json = checkpoint["tokenizer"]
    model.eval()
    data.prepare_data()
    data.setup("validate")
    tok = model.tokenizer
    if data.tokenizer.to_json() != model.tokenizer_json:
        sys.exit("the data's tokenizer is not the checkpoint's: pass the run's data settings after --")
    batches = list(data.val_dataloader())
    references = [
        tok.decode(until_stop([i for i in row if i != IGNORE_INDEX], tok.eot_id))
        for b in batches
        for row in b.target_out.tolist()
    ]
    n = len(references) if args.max_pairs is None else min(args.max_pairs, len(references))
    print(f"checkpoint {args.ckpt} (step {checkpoint['global_step']}); {n} validation pairs")

    train_targets = [tok.decode(data.train_set[i][1].tolist()) for i in range(len(data.train_set))]
    constant, count = collections.Counter(train_targets).most_common(1)[0]
    base = scores([constant] * n, references[:n])
    print(
        f"baseline  always {constant!r} ({count} of {len(train_targets)} train targets): "
        f"BLEU {base['bleu']:.2f}  chrF {base['chrf']:.2f}  exact {base['exact']:.3f}"
    )
    for beams in args.beams:
        start, outputs = time.perf_counter(), []
        for batch in batches:
            if len(outputs) >= n:
                break
            ids = model.generate_ids(batch.source, batch.source_mask, num_beams=beams)
            outputs += [tok.decode(row) for row in ids]
        s = scores(outputs[:n], references[:n])
        print(
            f"beams {beams:<3} BLEU {s['bleu']:.2f}  chrF {s['chrf']:.2f}  exact {s['exact']:.3f}  "
            f"({time.perf_counter() - start:.0f} s)"
        )


if __name__ == "__main__":
    main()
