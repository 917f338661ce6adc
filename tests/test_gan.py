"""GANModule in one process: nets, losses, n_critic step counting, EMA, refusals, sample grids."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from lightning.pytorch.strategies import DeepSpeedStrategy

from gen_lightning.callbacks import ImageSamples
from gen_lightning.data import ImageDataModule
from gen_lightning.errors import UserError
from gen_lightning.models import GANModule, VAEModule
from gen_lightning.models.nets.gan_nets import build_gan_nets
from tests.helpers import tiny_trainer


def blobs(image_size: int = 16, batch_size: int = 16) -> ImageDataModule:
    return ImageDataModule("synthetic", image_size=image_size, batch_size=batch_size, synthetic_size=128)


@pytest.mark.parametrize("net", ["mlp", "dcgan"])
@pytest.mark.parametrize("size", [16, 28, 32, 64])
@pytest.mark.parametrize("num_classes", [0, 10])
def test_nets_map_noise_to_images_and_images_to_one_score(net, size, num_classes):
    generator, discriminator = build_gan_nets(net, (3, size, size), 100, 8, num_classes, "batch")
    labels = torch.tensor([0, 3, 9]) if num_classes else None
    images = generator(torch.randn(3, 100), labels)
    assert images.shape == (3, 3, size, size)
    assert images.min() >= -1 and images.max() <= 1  # tanh: the data range
    assert discriminator(images, labels).shape == (3,)


def test_conditional_generator_output_depends_on_the_label():
    generator, _ = build_gan_nets("dcgan", (1, 28, 28), 100, 8, 10, "batch")
    generator.eval()
    z = torch.randn(1, 100).repeat(2, 1)
    a, b = generator(z, torch.tensor([1, 7]))
    assert not torch.allclose(a, b)


def test_unsupported_dcgan_size_is_a_user_error():
    with pytest.raises(UserError, match="image_size"):
        GANModule(net="dcgan", image_size=30)  # 30 -> 15: no 3..7 start


def test_wgan_gp_with_batch_norm_in_the_critic_is_refused():
    with pytest.raises(UserError, match="d_norm none"):
        GANModule(loss="wgan-gp", d_norm="batch")


@pytest.mark.parametrize(
    "loss, extra",
    [("nonsaturating", {}), ("hinge", {"r1_gamma": 1.0}), ("wgan-gp", {"d_norm": "none", "grad_clip": 1.0})],
)
def test_each_loss_trains_20_steps_without_nan(tmp_path, loss, extra):
    torch.manual_seed(0)
    model = GANModule(net="dcgan", image_size=16, width=8, loss=loss, **extra)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    # The GAN logs its training values on logging steps only (models/gan.py): log every batch to read them all.
    trainer = tiny_trainer(tmp_path, max_steps=20, log_every_n_steps=1)
    trainer.fit(model, blobs())
    assert trainer.global_step == 20
    logged = trainer.logged_metrics
    for key in ("train/d_loss", "train/g_loss", "train/d_real", "train/d_fake"):
        assert math.isfinite(float(logged[key])), key
    if loss == "wgan-gp":
        assert float(logged["train/gp"]) > 0
    if "r1_gamma" in extra:
        assert float(logged["train/r1"]) > 0
    after = dict(model.named_parameters())
    assert all(torch.isfinite(p).all() for p in after.values())
    changed = {k.split(".")[0] for k in after if not torch.equal(after[k], before[k])}
    assert changed == {"generator", "discriminator"}  # both nets were updated


class StepCounter(Callback):
    """Optimizer steps per optimizer: Lightning calls this hook on each step, manual optimization too."""

    def __init__(self) -> None:
        self.steps: dict[int, int] = {}
        self.batches = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.steps[id(optimizer)] = self.steps.get(id(optimizer), 0) + 1

    def on_train_batch_end(self, *args) -> None:
        self.batches += 1


def test_n_critic_5_makes_5_discriminator_steps_per_generator_step(tmp_path):
    model = GANModule(net="mlp", image_size=16, width=4, loss="wgan-gp", n_critic=5)
    counter = StepCounter()
    trainer = tiny_trainer(tmp_path, max_steps=24, callbacks=[counter])
    trainer.fit(model, blobs())
    opt_g, opt_d = (o.optimizer for o in model.optimizers())  # LightningOptimizer -> torch optimizer
    assert counter.batches == 4
    assert counter.steps == {id(opt_d): 20, id(opt_g): 4}
    # global_step counts the optimizer steps of both networks: (n_critic + 1) per batch.
    assert trainer.global_step == 24


def test_ema_generator_is_used_for_sampling_and_saved_in_the_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = GANModule(net="dcgan", image_size=16, width=8, ema_decay=0.5)
    trainer = tiny_trainer(tmp_path, max_steps=10)
    trainer.fit(model, blobs())
    g = dict(model.generator.named_parameters())
    ema = dict(model.generator_ema.module.named_parameters())
    assert ema.keys() == g.keys()
    assert any(not torch.allclose(ema[k], g[k]) for k in g)  # an average, not a copy
    assert int(model.generator_ema.n_averaged) == 5  # one update per generator step
    model.eval()
    z_seed = torch.Generator().manual_seed(3)
    expected = model.generator_ema.module(torch.randn(4, 100, generator=torch.Generator().manual_seed(3)))
    assert torch.allclose(model.sample(4, generator=z_seed), expected)

    path = tmp_path / "gan.ckpt"
    trainer.save_checkpoint(path)
    assert any(k.startswith("generator_ema.module.") for k in torch.load(path, weights_only=False)["state_dict"])
    restored = GANModule.load_from_checkpoint(path)
    for k, v in restored.generator_ema.module.named_parameters():
        assert torch.equal(v, ema[k])


class StockDeepSpeed(DeepSpeedStrategy):  # the real one needs deepspeed (and a GPU) to construct
    def __init__(self) -> None:
        self.config = {}


def test_gan_refuses_lightnings_own_deepspeed_and_points_to_the_per_network_one():
    model = GANModule(net="mlp", image_size=16, width=4)
    model._trainer = SimpleNamespace(strategy=StockDeepSpeed(), datamodule=None)
    with pytest.raises(UserError, match=r"steps two.*configs/trainer/deepspeed_stage2.yaml"):
        model.setup("fit")


def test_per_network_deepspeed_engines_read_the_gans_gradient_clipping():
    from gen_lightning.strategies.deepspeed_engines import PerNetworkEngines

    class PerNetworkDeepSpeed(PerNetworkEngines, StockDeepSpeed):
        pass

    strategy = PerNetworkDeepSpeed()
    model = GANModule(net="mlp", image_size=16, width=4, grad_clip=0.5)
    model._trainer = SimpleNamespace(strategy=strategy, datamodule=None)
    model.setup("fit")
    assert strategy.config == {}  # the module writes nothing into its strategy: the strategy reads the module
    strategy._clip_like(model)
    assert strategy.config == {"gradient_clipping": 0.5}
    strategy._clip_like(GANModule(net="mlp", image_size=16, width=4))  # 0: no clipping, nothing set
    assert strategy.config == {"gradient_clipping": 0.5}


def test_training_only_freezes_the_other_network_and_restores_it():
    model = GANModule(net="mlp", image_size=16, width=4)
    next(model.discriminator.parameters()).requires_grad_(False)  # frozen by the user: stays frozen after
    with model.training_only("generator"):
        assert all(p.requires_grad for p in model.generator.parameters())
        assert not any(p.requires_grad for p in model.discriminator.parameters())
    assert all(p.requires_grad for p in model.generator.parameters())
    flags = [p.requires_grad for p in model.discriminator.parameters()]
    assert flags.count(False) == 1 and len(flags) > 1


def test_conditional_gan_checks_the_number_of_classes_of_the_data():
    model = GANModule(net="mlp", image_size=16, width=4, num_classes=5)
    model._trainer = SimpleNamespace(strategy=None, datamodule=ImageDataModule("digits", image_size=16))
    with pytest.raises(UserError, match="--model.num_classes 10"):
        model.setup("fit")


class ImageRecorder(Logger):
    """A logger with `log_image`, like WandbLogger: records what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[tuple[str, int, tuple]] = []
        self.arrays: list = []

    name, version = "recorder", "0"

    def log_image(self, key, images, step=None) -> None:
        self.images.append((key, step, tuple(images[0].shape)))
        self.arrays.append(images[0])

    def log_metrics(self, metrics, step=None) -> None:
        return None

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        return None


def test_image_samples_writes_grids_every_n_steps_and_logs_them(tmp_path):
    import numpy as np
    from PIL import Image

    model = GANModule(net="dcgan", image_size=16, width=8, n_critic=2)  # 3 optimizer steps per batch
    recorder = ImageRecorder()
    callback = ImageSamples(every_n_steps=2, num_samples=16, nrow=4)
    trainer = tiny_trainer(tmp_path, max_steps=12, callbacks=[callback], logger=recorder)
    trainer.fit(model, blobs())
    folder = tmp_path / "recorder" / "0" / "samples"
    # 12 optimizer steps = 4 batches: a grid after batches 2 and 4, named by batches done; training ends at 4
    # (already written). On the logger they sit at the logging step of the batch that drew them (1 and 3),
    # the step its losses are logged at -- not at global_step 6 and 12.
    assert sorted(p.name for p in folder.iterdir()) == ["samples_step0000002.png", "samples_step0000004.png"]
    assert [(k, s) for k, s, _ in recorder.images] == [("samples/samples", 1), ("samples/samples", 3)]
    assert recorder.images[0][2] == (4 * 18 + 2, 4 * 18 + 2, 3)  # 4x4 grid of 16px images, 2px padding: HWC
    # What the logger got is the PNG's pixels, as uint8 (wandb turns float grids black).
    logged = recorder.arrays[-1]
    assert logged.dtype == np.uint8
    assert np.array_equal(logged, np.asarray(Image.open(folder / "samples_step0000004.png").convert("RGB")))
    assert logged.max() > 0


def test_image_samples_shows_vae_reconstructions_under_their_inputs(tmp_path):
    model = VAEModule(net="mlp", image_size=16, hidden_dim=32, latent_dim=4)
    callback = ImageSamples(every_n_steps=0, num_samples=8, nrow=4)
    trainer = tiny_trainer(tmp_path, max_steps=3, callbacks=[callback])
    trainer.fit(model, blobs())
    names = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert names == ["reconstructions_step0000003.png", "samples_step0000003.png"]
    from PIL import Image

    recon = Image.open(tmp_path / "samples" / "reconstructions_step0000003.png")
    assert recon.size == (4 * 18 + 2, 4 * 18 + 2)  # 2 rows of inputs + 2 rows of reconstructions


def test_gan_refuses_fsdp_in_one_line_before_wrapping():
    # FSDP runs only on GPUs; the refusal is the module's own, so it is checked without one.
    from lightning.pytorch.strategies import FSDPStrategy

    model = GANModule(net="mlp", image_size=16, width=4)
    strategy = FSDPStrategy.__new__(FSDPStrategy)  # no process group or device needed for the check
    model._trainer = SimpleNamespace(strategy=strategy, datamodule=None)
    with pytest.raises(UserError, match="FSDPStrategy wraps one module and the GAN trains two networks"):
        model.setup("fit")
