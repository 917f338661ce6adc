"""Generative metrics: FID / IS / KID on pluggable features, and token-weighted perplexity.

- `GenerativeScores`: FID, KID and IS (torchmetrics) from one feature pass per image.
- Feature extractors: `ClassifierFeatures` (a classifier trained on the dataset, cached under
  `data/evaluators/`) and `InceptionFeatures` (torch-fidelity's InceptionV3, local weights only).
- `ReferenceStats`: real-image statistics, `.npz` in pytorch-fid's layout (mu, sigma).
- `TokenPerplexity`: exp(total NLL / total tokens), exact under DDP.
"""

from gen_lightning.metrics.features import ClassifierFeatures, FeatureExtractor, to_uint8
from gen_lightning.metrics.perplexity import TokenPerplexity
from gen_lightning.metrics.reference import ReferenceStats
from gen_lightning.metrics.scores import GenerativeScores

__all__ = [
    "ClassifierFeatures",
    "FeatureExtractor",
    "GenerativeScores",
    "ReferenceStats",
    "TokenPerplexity",
    "to_uint8",
]
