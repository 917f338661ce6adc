"""Start-up: the verb list imports neither torch nor Lightning; a config typo fails before anything is built.
(The times themselves are benchmarks/startup.py's: a test asserts what makes them short.)"""

from __future__ import annotations

import functools
import subprocess
import sys

import pytest

from gen_lightning.verbs import LIGHTNING_VERBS, extra_verbs
from tests.conftest import CONFIGS, REPO, cli_env


@pytest.mark.parametrize("args", [["--help"], ["-h"]])
def test_verb_list_imports_no_torch_or_lightning(args):
    probe = (
        "import sys\nfrom gen_lightning.__main__ import main\ntry:\n    main(%r)\nexcept SystemExit as e:\n"
        "    code = e.code\nheavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'lightning', 'numpy', 'jsonargparse'))\nprint('HEAVY', heavy, 'EXIT', code)" % args
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        check=False,
        cwd=REPO,
        env=cli_env(PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY [] EXIT 0" in proc.stdout
    listed = [line.split()[0] for line in proc.stdout.splitlines() if line.startswith("  ")]
    assert listed == [*LIGHTNING_VERBS, *extra_verbs()]
    assert set(extra_verbs()) >= {"convert", "export", "sample", "submit", "sweep"}
    # each extra verb has its docstring's summary, not an empty column
    assert "Slurm job" in proc.stdout and "Hugging Face GPT-2 folder" in proc.stdout


def test_no_verb_is_a_usage_error_with_the_list(capsys):
    from gen_lightning.verbs import main

    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "fit" in capsys.readouterr().out


def test_config_typo_fails_before_any_dataset_or_model_is_built(tmp_path, monkeypatch, capsys):
    from gen_lightning.data import images
    from gen_lightning.models import vae
    from gen_lightning.cli import main

    built = []

    def recording(cls):
        @functools.wraps(cls.__init__)  # keeps the signature jsonargparse reads the keys from
        def init(self, *args, **kwargs):
            built.append(cls.__name__)
            return original(self, *args, **kwargs)

        original = cls.__init__
        return init

    for cls in (images.ImageDataModule, vae.VAEModule):
        monkeypatch.setattr(cls, "__init__", recording(cls))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIGS / "vae" / "mlp_digits.yaml"), "--model.lrr", "1"])
    assert exit_info.value.code == 2
    assert "model.lrr" in capsys.readouterr().err
    assert built == []
    assert list(tmp_path.iterdir()) == []  # no run folder, no data cache
