"""FID / KID / IS under 2-process DDP (gloo) with unequal shards equal the single-process values.

Each rank is a subprocess running a small script with torch.distributed directly (never DDP inside the
pytest process), with a timeout so that a collective mismatch (a hang) fails the test instead of CI.
"""

from __future__ import annotations

import pytest

from tests.helpers import run_two_ranks
from tests.metrics_helpers import make_data, make_scores

WORKER = """
import json, sys
import torch, torch.distributed as dist
sys.path.insert(0, ".")
from tests.metrics_helpers import make_data, make_scores
from gen_lightning.metrics import ReferenceStats

rank, port, folder = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
_, fake = make_data()
scores = make_scores()
scores.load_reference(ReferenceStats.load(f"{folder}/real.npz"), rank, 2)
# Unequal shards: rank 0 sees 3 batches (25 images), rank 1 one batch (12 images).
shards = {0: [fake[:10], fake[10:20], fake[20:25]], 1: [fake[25:]]}
for batch in shards[rank]:
    scores.update(batch, real=False)
result = scores.compute()
result["fake_count"] = int(scores.fid.fake_features_num_samples)  # local, after compute restored it
dist.barrier()
dist.destroy_process_group()
json.dump(result, open(f"{folder}/{rank}.json", "w"))
"""


def test_fid_kid_is_under_two_process_ddp_equal_single_process(tmp_path):
    real, fake = make_data()
    source = make_scores()
    source.update(real, real=True)
    stats = source.real_statistics()
    stats.save(tmp_path / "real.npz")
    single = make_scores()  # the same reference file as the ranks: the callback always goes through one
    single.load_reference(stats)
    single.update(fake, real=False)
    expected = single.compute()

    ranks = run_two_ranks(WORKER, tmp_path)
    assert [r.pop("fake_count") for r in ranks] == [25, 12]
    for result in ranks:
        assert set(result) == {"fid", "kid", "kid_std", "is", "is_std"}
        for name, value in expected.items():
            assert result[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
