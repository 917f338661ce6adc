"""TokenPerplexity under 2-process DDP (gloo) with unequal validation shards equals the single-process value."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gen_lightning.metrics import TokenPerplexity
from tests.helpers import run_two_ranks
from tests.metrics_helpers import batch_nll, batches

WORKER = """
import json, sys
import torch, torch.distributed as dist
sys.path.insert(0, ".")
from tests.metrics_helpers import batches, batch_nll
from gen_lightning.metrics import TokenPerplexity

rank, port, folder = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
metric = TokenPerplexity()
# Unequal shards, as a DistributedSampler without padding gives: rank 0 three batches, rank 1 one.
mine = batches()[:3] if rank == 0 else batches()[3:]
for logits, targets in mine:
    metric.update(*batch_nll(logits, targets))
local = float(torch.exp(metric.nll_sum / metric.tokens))
value = float(metric.compute())
dist.barrier()
dist.destroy_process_group()
json.dump({"ppl": value, "local_ppl": local}, open(f"{folder}/{rank}.json", "w"))
"""


def test_perplexity_under_two_process_ddp_with_unequal_shards_equals_single_process(tmp_path):
    single = TokenPerplexity()
    for logits, targets in batches():
        single.update(*batch_nll(logits, targets))
    expected = float(single.compute())
    # Independent check of the definition: exp(mean token NLL over the whole split).
    all_logits = torch.cat([lg.flatten(0, 1) for lg, _ in batches()])
    all_targets = torch.cat([t.flatten() for _, t in batches()])
    assert expected == pytest.approx(math.exp(F.cross_entropy(all_logits, all_targets).item()), rel=1e-5)

    ranks = run_two_ranks(WORKER, tmp_path)
    for result in ranks:
        assert result["ppl"] == pytest.approx(expected, rel=1e-5)
    # The shards really differ: averaging per-rank perplexities would be wrong by far more than 1e-5.
    naive = sum(r["local_ppl"] for r in ranks) / 2
    assert abs(naive - expected) / expected > 1e-2
