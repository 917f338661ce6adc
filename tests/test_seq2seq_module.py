"""Seq2SeqModule without a Trainer run: setup checks, GPT warm start, validation metrics, the table callback."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from gen_lightning.callbacks import TranslationSamples
from gen_lightning.capabilities import KeepsValidationExamples, NamesCheckpointMetric, TranslatesText
from gen_lightning.data import PairedTextDataModule, TextDataModule
from gen_lightning.data.tokenizers import ByteTokenizer
from gen_lightning.errors import UserError
from gen_lightning.models import GPTModule, Seq2SeqModule
from tests.helpers import TableLogger

SMALL = dict(
    n_encoder_layer=2,
    n_decoder_layer=1,
    n_head=2,
    n_embd=32,
    source_block_size=64,
    target_block_size=33,
    max_new_tokens=12,
    num_beams=2,
)


def toy_file(folder, n: int = 40) -> str:
    path = folder / "pairs.jsonl"
    path.write_text(
        "".join(
            json.dumps({"source": f"def f{i}(x):\n    return x + {i}", "target": f"Add {i}."}) + "\n" for i in range(n)
        )
    )
    return str(path)


def attach(module, datamodule, world_size: int = 1):
    """A stand-in Trainer with what setup() and validation read."""
    module.trainer = SimpleNamespace(
        datamodule=datamodule, ckpt_path=None, world_size=world_size, strategy=SimpleNamespace()
    )
    return module


@pytest.fixture
def toy_data(tmp_path):
    dm = PairedTextDataModule(
        train_file=toy_file(tmp_path),
        max_source_len=64,
        max_target_len=32,
        batch_size=4,
        cache_dir=str(tmp_path / "cache"),
    )
    dm.prepare_data()
    dm.setup()
    return dm


def test_claims_its_capabilities():
    module = Seq2SeqModule(**SMALL)
    for protocol in (TranslatesText, KeepsValidationExamples, NamesCheckpointMetric):
        assert isinstance(module, protocol)
    assert module.checkpoint_metric == ("val/bleu", "max")


def test_setup_names_the_fix_when_data_does_not_fit(toy_data, tmp_path):
    text = TextDataModule(corpus=toy_file(tmp_path), block_size=8, cache_dir=str(tmp_path / "c2"))
    with pytest.raises(UserError, match="set data.class_path to gen_lightning.data.PairedTextDataModule"):
        attach(Seq2SeqModule(**SMALL), text).setup("fit")
    with pytest.raises(
        UserError,
        match=r"data.max_source_len is 64 but model.source_block_size is 32; "
        r"set --model.source_block_size 64",
    ):
        attach(Seq2SeqModule(**{**SMALL, "source_block_size": 32}), toy_data).setup("fit")
    with pytest.raises(UserError, match=r"max_target_len \+ 1 \(start token\) is 33 but model.target_block_size is 32"):
        attach(Seq2SeqModule(**{**SMALL, "target_block_size": 32, "max_new_tokens": 8}), toy_data).setup("fit")
    with pytest.raises(UserError, match="257 ids but model.vocab_size is 100"):
        attach(Seq2SeqModule(**{**SMALL, "vocab_size": 100}), toy_data).setup("fit")
    with pytest.raises(UserError, match="divisible"):
        Seq2SeqModule(**{**SMALL, "n_head": 3})


def gpt_checkpoint(folder, **overrides) -> str:
    torch.manual_seed(1)
    gpt = GPTModule(**{**dict(n_layer=2, n_head=2, n_embd=32, block_size=48), **overrides})
    path = folder / "gpt.ckpt"
    torch.save(
        {"state_dict": gpt.state_dict(), "hyper_parameters": dict(gpt.hparams), "tokenizer": ByteTokenizer().to_json()},
        path,
    )
    return str(path)


def test_init_from_gpt_warm_starts_encoder_and_decoder(toy_data, tmp_path, caplog):
    path = gpt_checkpoint(tmp_path)
    gpt = torch.load(path, weights_only=True)["state_dict"]
    torch.manual_seed(0)
    module = attach(Seq2SeqModule(**SMALL, init_from=path), toy_data)
    fresh_cross = module.net.decoder.h[0].cross_attn.c_q.weight.clone()
    module.setup("fit")
    net = module.net
    for stack, layers in ((net.encoder, 2), (net.decoder, 1)):
        for i in range(layers):
            for name in ("attn.c_attn.weight", "attn.c_proj.bias", "mlp.c_fc.weight", "ln_1.weight", "ln_2.bias"):
                module, param = name.rsplit(".", 1)
                assert torch.equal(
                    stack.h[i].get_submodule(module).get_parameter(param), gpt[f"net.transformer.h.{i}.{name}"]
                ), (stack, i, name)
        assert torch.equal(stack.ln_f.weight, gpt["net.transformer.ln_f.weight"])
    for embedding in (net.lm_head.weight, net.encoder.wte.weight):
        assert torch.equal(embedding, gpt["net.transformer.wte.weight"])
    assert net.decoder.wte.weight is net.lm_head.weight  # still tied after loading
    # The GPT has 48 positions: the encoder's 64 keep their fresh init beyond them, the decoder's 33 all come over.
    assert torch.equal(net.encoder.wpe.weight[:48], gpt["net.transformer.wpe.weight"])
    assert not torch.equal(net.encoder.wpe.weight[48:], torch.zeros(16, 32))
    assert torch.equal(net.decoder.wpe.weight, gpt["net.transformer.wpe.weight"][:33])
    assert torch.equal(net.decoder.h[0].cross_attn.c_q.weight, fresh_cross)  # cross-attention: fresh


def test_init_from_refuses_what_does_not_fit(toy_data, tmp_path):
    cases = [
        (dict(n_embd=64), "is 64 wide, this model 32; set --model.n_embd 64"),
        (dict(n_head=4), "has 4 heads, this model 2; set --model.n_head 4"),
        (dict(n_layer=1), "has 1 layers, this model needs 2"),
        (dict(vocab_size=300), "knows 300 token ids, this model 257"),
    ]
    for gpt_args, message in cases:
        path = gpt_checkpoint(tmp_path, **gpt_args)
        with pytest.raises(UserError, match=message):
            attach(Seq2SeqModule(**SMALL, init_from=path), toy_data).setup("fit")
    path = gpt_checkpoint(tmp_path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["tokenizer"] = json.dumps({"kind": "bpe", "tokenizer": "{}"})
    torch.save(checkpoint, path)
    with pytest.raises(UserError, match="another tokenizer"):
        attach(Seq2SeqModule(**SMALL, init_from=path), toy_data).setup("fit")
    with pytest.raises(UserError, match="does not exist"):
        attach(Seq2SeqModule(**SMALL, init_from=str(tmp_path / "nope.ckpt")), toy_data).setup("fit")


def test_validation_scores_the_generated_outputs_against_the_references(toy_data):
    from torchmetrics.functional.text import chrf_score, sacre_bleu_score

    torch.manual_seed(0)
    module = attach(Seq2SeqModule(**SMALL), toy_data)
    module.setup("validate")
    module.log = lambda name, value, **_: logged.__setitem__(name, float(value))
    logged: dict = {}
    batches = list(toy_data.val_dataloader())
    for i, batch in enumerate(batches):
        module.validation_step(batch, i)
    module.on_validation_epoch_end()
    tok = toy_data.tokenizer
    outputs, references = [], []
    for batch in batches:
        outputs += [tok.decode(ids) for ids in module.generate_ids(batch.source, batch.source_mask, num_beams=2)]
        references += [tok.decode([t for t in row if t >= 0][:-1]) for row in batch.target_out.tolist()]
    assert len(references) == len(toy_data.val_set) == 4 and references[0].startswith("Add 3")
    assert logged["val/bleu"] == pytest.approx(100 * float(sacre_bleu_score(outputs, [[r] for r in references])))
    assert logged["val/chrf"] == pytest.approx(100 * float(chrf_score(outputs, [[r] for r in references])))
    assert logged["val/exact_match"] == sum(o == r for o, r in zip(outputs, references)) / 4
    assert logged["val/perplexity"] == pytest.approx(torch.tensor(logged["val/loss"]).exp().item(), rel=1e-5)
    assert 4.0 < logged["val/loss"] < 7.0  # untrained: about log(257) = 5.55 nats
    sources = [s for s, _, _ in module.validation_examples]
    assert sources and all(s.startswith("def f") for s in sources)
    # A cap of 0 generated batches: no generation, no text metrics logged.
    logged.clear()
    module.hparams.val_generate_batches = 0
    module.validation_step(batches[0], 0)
    module.on_validation_epoch_end()
    assert set(logged) == {"val/loss", "val/perplexity"}


def test_translation_table_goes_to_loggers_and_the_run_folder(tmp_path):
    module = SimpleNamespace(validation_examples=[("def f(x):\n    return " + "x" * 50, "Ref.", "Out.")] * 3)
    table = TableLogger()
    trainer = SimpleNamespace(
        global_step=10, is_global_zero=True, sanity_checking=False, loggers=[table], default_root_dir=str(tmp_path)
    )
    table.save_dir, table.name, table.version = str(tmp_path), "proj", "run1"
    callback = TranslationSamples(num_rows=2, max_source_chars=20)
    callback.on_validation_end(trainer, module)
    trainer.global_step = 20
    callback.on_validation_end(trainer, module)
    key, columns, rows, step = table.calls[-1]
    assert key == "samples/translations" and columns == ["step", "source", "reference", "generated"] and step == 20
    assert [r[0] for r in rows] == [10, 10, 20, 20]
    assert rows[0][1] == "def f(x):\n    return ..." and rows[0][3] == "Out."
    md = (tmp_path / "proj" / "run1" / "samples" / "translations.md").read_text()
    assert md.count("## step") == 2 and md.count("- generated: Out.") == 4
    with pytest.raises(UserError, match="TranslationSamples needs a model"):
        callback.setup(trainer, GPTModule(n_layer=1, n_head=2, n_embd=16), "fit")


def test_generate_targets_from_text(toy_data):
    module = attach(Seq2SeqModule(**SMALL), toy_data)
    module.setup("fit")
    out = module.generate_targets(["def g(x):\n    return x", "def h():\n    pass"], max_new_tokens=8, num_beams=3)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)
    sampled = [
        module.generate_targets(
            ["def g(x): pass"], 8, temperature=1.0, top_k=20, generator=torch.Generator().manual_seed(s)
        )
        for s in (0, 0, 1)
    ]
    assert sampled[0] == sampled[1]
    assert module.training  # generation restores train mode
    with pytest.raises(UserError, match="longer than the model's source_block_size 64"):
        module.generate_targets(["x" * 65])
