"""gen-lightning: one Lightning framework for GANs, VAEs and GPTs, from a laptop CPU to multi-node SLURM."""

__version__ = "0.1.0"
