"""Every family implements exactly the capabilities it claims (gen_lightning/capabilities.py), and the
contract between modules and strategies goes one way: importing the package touches no Lightning registry."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest
import torch

from gen_lightning import capabilities
from gen_lightning.capabilities import network_unit
from gen_lightning.data.images import ImageDataModule
from gen_lightning.data.paired import PairedTextDataModule
from gen_lightning.data.text import TextDataModule
from gen_lightning.models import GANModule, GPTModule, LSTMModule, Seq2SeqModule, VAEModule
from gen_lightning.strategies import DeepSpeedCPUStrategy, SubmoduleDDPStrategy

PROTOCOLS = {
    name: value
    for name, value in vars(capabilities).items()
    if inspect.isclass(value)
    and getattr(value, "_is_runtime_protocol", False)
    and value.__module__ == capabilities.__name__
}

# What each class offers. A class that gains or loses a capability changes this line on purpose.
CLAIMS = {
    GANModule: {
        "ShowsOnProgressBar",
        "TrainsNetworksInTurn",
        "NamesGradientClip",
        "SamplesImages",
        "SamplesImagesByClass",
        "ReportsFlops",
        "NamesCheckpointMetric",
        "YieldsImages",
        "CountsClasses",
    },
    VAEModule: {
        "ShowsOnProgressBar",
        "SamplesImages",
        "SamplesImagesByClass",
        "Reconstructs",
        "ReportsFlops",
        "NamesCheckpointMetric",
        "YieldsImages",
        "CountsClasses",
    },
    GPTModule: {"ShowsOnProgressBar", "GeneratesText", "ReportsFlops", "NamesCheckpointMetric"},
    LSTMModule: {"ShowsOnProgressBar", "GeneratesText", "ReportsFlops", "NamesCheckpointMetric"},
    Seq2SeqModule: {
        "ShowsOnProgressBar",
        "TranslatesText",
        "KeepsValidationExamples",
        "ReportsFlops",
        "NamesCheckpointMetric",
    },
    ImageDataModule: {"YieldsImages", "CountsClasses", "HasFullDataset"},
    TextDataModule: {"HasVocabulary", "CutsBlocks", "HasTokenizer"},
    PairedTextDataModule: {"HasVocabulary", "HasTokenizer"},
}
# A model's `tokenizer` raises until it was trained (it is not the data's capability), so it is not probed there.
NOT_PROBED = {GPTModule: {"HasTokenizer"}, LSTMModule: {"HasTokenizer"}, Seq2SeqModule: {"HasTokenizer"}}


def test_the_claims_name_real_protocols():
    assert len(PROTOCOLS) >= 19
    for claimed in CLAIMS.values():
        assert claimed <= PROTOCOLS.keys()


@pytest.mark.parametrize("cls", list(CLAIMS), ids=lambda cls: cls.__name__)
def test_each_class_implements_exactly_what_it_claims(cls):
    instance = cls()
    probed = PROTOCOLS.keys() - NOT_PROBED.get(cls, set())
    offered = {name for name in probed if isinstance(instance, PROTOCOLS[name])}
    assert offered == CLAIMS[cls] - NOT_PROBED.get(cls, set())


def test_both_multi_network_strategies_wrap_networks_and_deepspeed_counts_skipped_steps():
    assert issubclass(SubmoduleDDPStrategy, capabilities.WrapsNetworks)
    assert issubclass(DeepSpeedCPUStrategy, capabilities.WrapsNetworks)
    assert issubclass(DeepSpeedCPUStrategy, capabilities.SkipsNonFiniteSteps)
    assert not issubclass(SubmoduleDDPStrategy, capabilities.SkipsNonFiniteSteps)
    assert SubmoduleDDPStrategy().unit_for("generator") is None  # nothing wrapped before set-up


def test_implements_answers_as_isinstance_for_the_method_protocols_the_step_asks():
    """`implements` (decided once per class, for the checks made every batch) agrees with isinstance."""
    from lightning.pytorch.strategies import SingleDeviceStrategy

    objects = [GANModule(), VAEModule(), SubmoduleDDPStrategy(), DeepSpeedCPUStrategy(), SingleDeviceStrategy("cpu")]
    for protocol in (capabilities.WrapsNetworks, capabilities.SkipsNonFiniteSteps, capabilities.ReportsFlops):
        for obj in objects:
            assert capabilities.implements(obj, protocol) == isinstance(obj, protocol), (obj, protocol)
    assert capabilities.implements(DeepSpeedCPUStrategy(), capabilities.SkipsNonFiniteSteps)
    assert not capabilities.implements(SingleDeviceStrategy("cpu"), capabilities.WrapsNetworks)


def test_network_unit_is_the_network_itself_outside_a_wrapping_strategy():
    model = GANModule(net="mlp", image_size=16, width=4)
    assert network_unit(model, "generator") is model.generator

    class Wrapping:
        def __init__(self):
            self.unit = torch.nn.Identity()

        def unit_for(self, name):
            return self.unit if name == "discriminator" else None

    strategy = Wrapping()
    model._trainer = type("T", (), {"strategy": strategy})()
    assert network_unit(model, "discriminator") is strategy.unit
    assert network_unit(model, "generator") is model.generator  # not wrapped by this strategy: the plain net


REGISTRY_SNAPSHOT = """
import json, sys
from lightning.pytorch.strategies import StrategyRegistry
def snapshot():
    return {name: (entry["strategy"].__module__, entry["strategy"].__name__, repr(sorted(entry["init_params"])))
            for name, entry in StrategyRegistry.items()}
before = snapshot()
import gen_lightning.models, gen_lightning.strategies, gen_lightning.callbacks, gen_lightning.data
after_import = snapshot()
from gen_lightning.strategies import register
register()
after_register = snapshot()
print(json.dumps([before == after_import, after_register["ddp"][1], before["ddp"][1]]))
"""


def test_importing_the_package_changes_no_lightning_registry_and_the_cli_registers_ddp():
    out = subprocess.run([sys.executable, "-c", REGISTRY_SNAPSHOT], capture_output=True, text=True, check=True)
    unchanged, ddp_after_register, ddp_before = json.loads(out.stdout.strip().splitlines()[-1])
    assert unchanged
    assert ddp_before == "DDPStrategy"
    assert ddp_after_register == "SubmoduleDDPStrategy"
