"""One LightningModule per model family; the networks themselves are plain nn.Modules in `nets/`."""

from gen_lightning.models.vae import VAEModule

__all__ = ["VAEModule"]
