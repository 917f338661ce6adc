"""The inception extractor gives torch-fidelity's numbers.

With the real weights (only when the file is already in torch hub's checkpoints dir: nothing is
downloaded) the whole pipeline is compared with `torch_fidelity.calculate_metrics`. Without them,
the same wiring (uint8 quantisation, grayscale -> RGB, torch-fidelity's network, FID/KID/IS
statistics) is compared on a randomly initialised InceptionV3 saved as a weights file.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gen_lightning.errors import UserError
from gen_lightning.metrics import GenerativeScores, to_uint8

torch_fidelity = pytest.importorskip("torch_fidelity")
from gen_lightning.metrics.inception import InceptionFeatures, default_weights_path, require_inception_weights  # noqa: E402


class UInt8Images(torch.utils.data.Dataset):
    """What torch-fidelity reads: uint8 [3, H, W] tensors."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = to_uint8(images).expand(-1, 3, -1, -1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def digit_like_images(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 16, 16, generator=g) * 2 - 1 + shift).clamp(-1, 1)


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """torch-fidelity's InceptionV3 with random (variance-preserving) weights, saved as a weights file."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    mp = pytest.MonkeyPatch()
    mp.setattr(fe, "load_state_dict_from_url", lambda *a, **k: None)  # build the net without any weights
    mp.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
    try:
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        mp.undo()
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("inception") / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(net.state_dict(), path)
    return path


def test_missing_weights_name_the_file_and_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(UserError) as err:
        require_inception_weights()
    message = str(err.value)
    assert "\n" not in message
    assert "weights-inception-2015-12-05-6726825d.pth" in message
    assert f"in {tmp_path / 'th' / 'hub' / 'checkpoints'}/" in message
    with pytest.raises(UserError, match="nowhere.pth' not found"):
        require_inception_weights(str(tmp_path / "nowhere.pth"))


def test_inception_pipeline_matches_torch_fidelity_statistics(random_inception_weights):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    n = 10
    real, fake = digit_like_images(n, 0), digit_like_images(n, 1, shift=0.4)
    extractor = InceptionFeatures(str(random_inception_weights))
    scores = GenerativeScores(extractor, kid_subsets=1, kid_subset_size=n, is_splits=1)
    real_f, _ = scores.features(real)
    fake_f, fake_logits = scores.features(fake)
    scores.update_features(real_f, None, real=True)
    scores.update_features(fake_f, fake_logits, real=False)
    ours = scores.compute()

    # torch-fidelity's own network on its own RGB uint8 input gives the same features.
    theirs_net = FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(random_inception_weights)
    )
    f, logits = theirs_net(UInt8Images(fake[:3]).images)
    assert torch.allclose(f, fake_f[:3], rtol=1e-4, atol=1e-5)
    assert torch.allclose(logits, fake_logits[:3], rtol=1e-4, atol=1e-4)

    # ... and torch-fidelity's statistics on those features give our numbers.
    fid = fid_statistics_to_metric(fid_features_to_statistics(real_f), fid_features_to_statistics(fake_f), False)
    kid = kid_features_to_metric(real_f, fake_f, kid_subsets=1, kid_subset_size=n, verbose=False)
    isc = isc_features_to_metric(fake_logits, splits=1)
    assert ours["fid"] > 0
    assert ours["fid"] == pytest.approx(fid["frechet_inception_distance"], rel=1e-3)
    assert ours["kid"] == pytest.approx(kid["kernel_inception_distance_mean"], rel=1e-3)
    assert ours["is"] == pytest.approx(isc["inception_score_mean"], rel=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(
    not default_weights_path().is_file(),
    reason=f"InceptionV3 weights not present at {default_weights_path()} (never downloaded by tests)",
)
def test_inception_numbers_match_torch_fidelity_with_the_real_weights():
    n = 64
    real, fake = digit_like_images(n, 0), digit_like_images(n, 1, shift=0.4)
    scores = GenerativeScores(InceptionFeatures(), kid_subsets=1, kid_subset_size=n, is_splits=1)
    scores.update(real, real=True)
    scores.update(fake, real=False)
    ours = scores.compute()
    theirs = torch_fidelity.calculate_metrics(
        input1=UInt8Images(fake),
        input2=UInt8Images(real),
        fid=True,
        isc=True,
        kid=True,
        kid_subsets=1,
        kid_subset_size=n,
        isc_splits=1,
        cuda=torch.cuda.is_available(),
        cache=False,
        verbose=False,
        feature_extractor_weights_path=str(default_weights_path()),
    )
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-3)
    assert ours["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-3)
    assert ours["is"] == pytest.approx(theirs["inception_score_mean"], rel=1e-3)
