"""What FID / KID / IS cost with the classifier extractor, and how their memory grows.

    python benchmarks/metrics_cost.py [--evaluator data/evaluators/digits-28.pt] [--device cpu]

Prints, side by side from one run:
1. seconds per 1,000 images: the classifier forward (uint8 -> features + logits), then each metric's
   update and compute (KID: 100 subsets of 1,000; IS: 10 splits) at 1k, 5k and 10k generated images;
2. metric state bytes and process resident memory as generated images stream in (1k -> 50k): FID's state is
   two running sums per side and must stay flat; KID and IS keep every feature and grow linearly.
Uses the cached digits evaluator (trains it first, ~20 s, when it is missing). Under 1 minute on 2 cores.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch

from gen_lightning.data.images import ImageDataModule, load_digits_tensor
from gen_lightning.metrics import GenerativeScores
from gen_lightning.metrics.classifier_features import ensure_classifier, load_classifier_features


def state_bytes(metric) -> int:
    total = 0
    for name in metric._defaults:
        value = getattr(metric, name)
        tensors = value if isinstance(value, list) else [value]
        total += sum(t.numel() * t.element_size() for t in tensors)
    return total


def rss_mb() -> float:
    """Resident memory now (Linux /proc), not the peak: growth must be visible."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def timed(fn, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluator", default=None, help="exported classifier (default: the cached digits one)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)

    path = (
        Path(args.evaluator)
        if args.evaluator
        else ensure_classifier(ImageDataModule("digits"), Path("data/evaluators"))
    )
    extractor = load_classifier_features(path, (1, 28, 28)).to(device)
    images, _ = load_digits_tensor(28)
    print(
        f"extractor: classifier {path} ({extractor.num_features} features, {extractor.num_logits} logits), "
        f"device {device}, torch threads {torch.get_num_threads()}"
    )

    # -- 1. time per 1k images ---------------------------------------------------------------------
    scores = GenerativeScores(extractor).to(device)
    batch = images[:1000].to(device)
    scores.features(batch)  # warm-up
    t_extract = timed(lambda: scores.features(batch), repeat=3)
    real_f, _ = scores.features(images.to(device))
    scores.update_features(real_f, None, real=True)
    print(f"\n1) seconds per 1,000 images (real side: {len(real_f)} digits)")
    print(f"   classifier forward (features + logits): {t_extract:.3f} s")
    print(
        f"   {'generated':>10} {'FID upd':>9} {'KID upd':>9} {'IS upd':>9} {'FID compute':>12} {'KID compute':>12} {'IS compute':>11}"
    )
    for n in (1_000, 5_000, 10_000):
        feats = real_f[torch.randint(0, len(real_f), (n,))] + 0.1 * torch.randn(n, real_f.shape[1], device=device)
        logits = extractor.net.head(feats)
        scores.reset_fake()
        t_fid = timed(lambda: scores.fid.update(feats, real=False))  # noqa: B023 - timed() calls it now
        t_kid = timed(lambda: scores.kid.update(feats, real=False))  # noqa: B023 - timed() calls it now
        t_is = timed(lambda: scores.inception_score.update(logits))  # noqa: B023 - timed() calls it now
        t_fid_c = timed(lambda: scores.fid.compute())
        scores.kid.subset_size = 1000
        t_kid_c = timed(lambda: scores.kid.compute())
        t_is_c = timed(lambda: scores.inception_score.compute())
        k = n / 1000
        print(
            f"   {n:>10,} {t_fid / k:>9.4f} {t_kid / k:>9.4f} {t_is / k:>9.4f} {t_fid_c:>12.3f} {t_kid_c:>12.3f} {t_is_c:>11.3f}"
        )

    # -- 2. memory as generated images stream in ---------------------------------------------------
    print("\n2) state bytes while generated images stream in, 1,000 per update (and the process's resident memory)")
    print(f"   {'generated':>10} {'FID state':>12} {'KID state':>12} {'IS state':>12} {'RSS MB':>12}")
    fid_only = GenerativeScores(extractor, ("fid",)).to(device)
    keeping = GenerativeScores(extractor, ("kid", "is")).to(device)
    seen, checkpoints = 0, {1_000, 10_000, 25_000, 50_000}
    while seen < 50_000:
        feats = real_f[torch.randint(0, len(real_f), (1000,))] + 0.1 * torch.randn(1000, real_f.shape[1], device=device)
        fid_only.update_features(feats, None, real=False)
        keeping.update_features(feats, extractor.net.head(feats), real=False)
        seen += 1000
        if seen in checkpoints:
            print(
                f"   {seen:>10,} {state_bytes(fid_only.fid):>12,} {state_bytes(keeping.kid):>12,} "
                f"{state_bytes(keeping.inception_score):>12,} {rss_mb():>12.0f}"
            )
    print("   FID: constant (sums); KID: N x features x 4 bytes; IS: N x classes x 4 bytes.")


if __name__ == "__main__":
    main()
