"""The encoder-decoder network alone: masks, causality, tying, KV cache, greedy == beam size 1, sampling."""

from __future__ import annotations

import pytest
import torch

from gen_lightning.models.nets.seq2seq import Seq2Seq, Seq2SeqConfig, until_stop
from gen_lightning.models.nets.transformer import GPT, GPTConfig, KVCache

V, START = 40, 39


def tiny(**overrides) -> Seq2Seq:
    torch.manual_seed(0)
    config = dict(
        vocab_size=V,
        source_block_size=24,
        target_block_size=20,
        n_encoder_layer=2,
        n_decoder_layer=2,
        n_head=2,
        n_embd=32,
    )
    model = Seq2Seq(Seq2SeqConfig(**{**config, **overrides})).eval()
    with torch.no_grad():  # an untrained tied model repeats its start token; larger weights give varied outputs
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(8)
    return model


def padded_sources() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    source = torch.randint(0, V - 1, (4, 16), generator=g)
    mask = torch.ones(4, 16, dtype=torch.bool)
    for row, length in enumerate((16, 9, 12, 5)):
        mask[row, length:] = False
        source[row, length:] = START  # the padding id: anything, it is masked
    return source, mask


def rows(out: torch.Tensor, stop: int) -> list[list[int]]:
    return [until_stop(r, stop) for r in out.tolist()]


def test_embeddings_are_tied_and_names_follow_the_gpt():
    model = tiny()
    assert model.decoder.wte.weight is model.lm_head.weight and model.encoder.wte.weight is not model.lm_head.weight
    gpt = GPT(GPTConfig(vocab_size=V, block_size=24, n_layer=2, n_head=2, n_embd=32))
    gpt_block = {k for k in gpt.state_dict() if k.startswith("transformer.h.0.")}
    for stack in ("encoder", "decoder"):
        names = {k for k in model.state_dict() if k.startswith(f"{stack}.h.0.")}
        assert {k.replace(f"{stack}.", "transformer.", 1) for k in names} >= gpt_block
    cross = {k for k in model.state_dict() if "cross" in k}
    assert cross and all(k.startswith("decoder.") for k in cross)
    assert model.encoder.h[0].attn.causal is False and model.decoder.h[0].attn.causal is True


def test_padding_never_changes_the_real_positions():
    model = tiny()
    source, mask = padded_sources()
    other = source.clone()
    other[~mask] = 7  # different padding ids
    target = torch.randint(0, V - 1, (4, 6))
    assert torch.allclose(model(source, mask, target), model(other, mask, target), atol=1e-6)
    # ... and the padded batch equals each row run alone without padding.
    for row, length in enumerate((16, 9, 12, 5)):
        alone = model(source[row : row + 1, :length], mask[row : row + 1, :length], target[row : row + 1])
        assert torch.allclose(model(source, mask, target)[row], alone[0], atol=1e-5)


def test_encoder_sees_the_whole_source_decoder_only_the_past():
    model = tiny()
    source, mask = padded_sources()
    changed = source.clone()
    changed[0, 15] = (changed[0, 15] + 1) % (V - 1)  # the last source token
    encoded, encoded_changed = model.encode(source, mask), model.encode(changed, mask)
    assert not torch.allclose(encoded[0, 0], encoded_changed[0, 0], atol=1e-4)  # bidirectional
    target = torch.randint(0, V - 1, (4, 8))
    later = target.clone()
    later[:, 5:] = (later[:, 5:] + 1) % (V - 1)
    a, b = model(source, mask, target), model(source, mask, later)
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6) and not torch.allclose(a[:, 5:], b[:, 5:], atol=1e-4)


def test_cached_decoding_in_chunks_equals_one_forward():
    model = tiny()
    source, mask = padded_sources()
    memories = model.cross_memories(model.encode(source, mask))
    target = torch.randint(0, V - 1, (4, 10))
    caches = [KVCache() for _ in model.decoder.h]
    chunks = [
        model.decode(target[:, :4], memories, mask, caches),
        model.decode(target[:, 4:5], memories, mask, caches),
        model.decode(target[:, 5:], memories, mask, caches),
    ]
    assert torch.allclose(torch.cat(chunks, dim=1), model(source, mask, target), atol=1e-5)


def stopping_token(model: Seq2Seq) -> int:
    """An id the greedy outputs emit, chosen so that as the stop token it ends the rows at the most different steps."""
    source, mask = padded_sources()
    out = model.generate(source, mask, 20, START, stop_token=-1)
    candidates = sorted(set(out.flatten().tolist()) - {START})
    return max(candidates, key=lambda t: len({len(r) for r in rows(out, t)}))


@pytest.mark.parametrize("stop", ["never", "early"])
def test_beam_size_one_is_greedy_token_for_token_and_the_cache_changes_nothing(stop):
    model = tiny()
    source, mask = padded_sources()
    stop_token = -1 if stop == "never" else stopping_token(model)
    greedy = model.generate(source, mask, 20, START, stop_token)
    assert torch.equal(greedy, model.generate(source, mask, 20, START, stop_token, use_cache=False))
    beam1 = model.beam_search(source, mask, 20, START, stop_token, num_beams=1)
    assert rows(beam1, stop_token) == rows(greedy, stop_token)
    assert rows(
        model.beam_search(source, mask, 20, START, stop_token, num_beams=1, use_cache=False), stop_token
    ) == rows(greedy, stop_token)
    if stop == "early":
        lengths = {len(r) for r in rows(greedy, stop_token)}
        assert min(lengths) < 20 and len(lengths) > 1  # rows really stopped, at different steps
    else:
        assert greedy.shape == (4, 20)


def test_beam_search_with_and_without_cache_gives_the_same_tokens():
    model = tiny()
    source, mask = padded_sources()
    stop_token = stopping_token(model)
    for beams, penalty in ((2, 1.0), (4, 0.0), (4, 2.0)):
        cached = model.beam_search(source, mask, 20, START, stop_token, num_beams=beams, length_penalty=penalty)
        uncached = model.beam_search(
            source, mask, 20, START, stop_token, num_beams=beams, length_penalty=penalty, use_cache=False
        )
        assert torch.equal(cached, uncached)


def sequence_log_prob(model: Seq2Seq, source, mask, ids: list[int], stop: int) -> float:
    target = torch.tensor([[START] + ids])
    log_probs = model(source, mask, target[:, :-1]).log_softmax(-1)[0]
    return float(log_probs.gather(1, target[0, 1:, None]).sum())


def test_beam_search_returns_its_best_finished_hypothesis_by_score():
    model = tiny()
    source, mask = padded_sources()
    stop = stopping_token(model)
    out = model.beam_search(source[:1], mask[:1], 20, START, stop, num_beams=4, length_penalty=0.0)
    best = out[0].tolist()
    best = best[: best.index(stop) + 1] if stop in best else best
    # With length penalty 0 the score is the sequence log-probability, which the network itself confirms;
    # it is at least that of the greedy output, which a 4-beam search of this model also reaches.
    greedy = model.generate(source[:1], mask[:1], 20, START, stop)[0].tolist()
    greedy = greedy[: greedy.index(stop) + 1] if stop in greedy else greedy
    assert (
        sequence_log_prob(model, source[:1], mask[:1], best, stop)
        >= sequence_log_prob(model, source[:1], mask[:1], greedy, stop) - 1e-5
    )


def test_sampling_is_seeded_and_top_k_one_is_greedy():
    model = tiny()
    source, mask = padded_sources()

    def sample(seed, **kwargs):
        return model.generate(
            source, mask, 12, START, -1, temperature=1.0, generator=torch.Generator().manual_seed(seed), **kwargs
        )

    assert torch.equal(sample(0), sample(0)) and not torch.equal(sample(0), sample(1))
    assert torch.equal(sample(3, top_k=1), model.generate(source, mask, 12, START, -1))
    assert torch.equal(sample(3, top_p=1e-6), model.generate(source, mask, 12, START, -1))


def test_stop_when_done_false_runs_every_step():
    model = tiny()
    source, mask = padded_sources()
    stop = stopping_token(model)
    early = model.generate(source, mask, 20, START, stop)
    full = model.generate(source, mask, 20, START, stop, stop_when_done=False)
    assert full.shape == (4, 20) and rows(full, stop) == rows(early, stop)
    beams = model.beam_search(source, mask, 20, START, stop, num_beams=3, stop_when_done=False)
    assert rows(beams, stop) == rows(model.beam_search(source, mask, 20, START, stop, num_beams=3), stop)


def test_lengths_beyond_the_positions_are_refused():
    model = tiny()
    source, mask = padded_sources()
    with pytest.raises(ValueError, match="target_block_size"):
        model.generate(source, mask, 21, START, -1)
    with pytest.raises(ValueError, match="source_block_size"):
        model.encode(torch.zeros(1, 25, dtype=torch.long), torch.ones(1, 25, dtype=torch.bool))
