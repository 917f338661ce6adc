"""One LightningModule per model family; the networks themselves are plain nn.Modules in `nets/`."""

from gen_lightning.models.gan import GANModule
from gen_lightning.models.gpt import GPTModule
from gen_lightning.models.lstm import LSTMModule
from gen_lightning.models.seq2seq import Seq2SeqModule
from gen_lightning.models.vae import VAEModule

__all__ = ["GANModule", "GPTModule", "LSTMModule", "Seq2SeqModule", "VAEModule"]
