"""Generative metrics: FID / IS / KID on pluggable features, and token-weighted perplexity."""

from gen_lightning.metrics.perplexity import TokenPerplexity

__all__ = ["TokenPerplexity"]
