"""What README.md and docs/ promise must exist: every metric key they name is logged somewhere in the code, every
config file they name is in configs/. (docs/metrics.md once said `val/ppl` for what the code logs as
`val/perplexity`.)"""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
METRIC = re.compile(r"`((?:train|val|throughput|samples|gpu)/[a-z0-9_/]*[a-z0-9_])`")
CONFIG = re.compile(r"configs/[\w./-]+\.yaml")


def code_text() -> str:
    return "\n".join(p.read_text() for p in (REPO / "gen_lightning").rglob("*.py"))


def generated_keys() -> set[str]:
    """Keys the code builds from parts rather than writes out: GenerativeMetrics logs f"val/{name}", ImageSamples
    f"samples/{grid}"."""
    from gen_lightning.metrics.scores import METRICS

    return {f"val/{m}" for m in METRICS} | {"val/kid_std", "val/is_std", "samples/samples", "samples/reconstructions"}


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_metric_names_in_the_docs_are_logged_by_the_code(doc):
    code, generated = code_text(), generated_keys()
    missing = sorted(
        {
            m
            for m in METRIC.findall(doc.read_text())
            if m not in generated and f'"{m}' not in code and f"'{m}" not in code
        }
    )
    assert not missing, f"{doc.name} names metrics the code never logs: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_config_files_in_the_docs_exist(doc):
    missing = sorted({c for c in CONFIG.findall(doc.read_text()) if not (REPO / c).is_file()})
    assert not missing, f"{doc.name} names config files that do not exist: {missing}"
