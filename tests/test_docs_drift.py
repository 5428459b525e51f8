"""The docs say what the code does: the rule for `tlbench up --host`, the sample benchmark, the settings table."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from dashboard.schemas import SAMPLE_BENCHMARK
from jobs.backbones import SEED_BACKBONES, get_backbone
from tlbench.cli import EXPOSURE_RULE

ROOT = Path(__file__).resolve().parents[1]
# Where tlbench's own code reads its settings (bench/ and tests/ are not the product).
PRODUCT_CODE = ("config", "dashboard", "db", "jobs", "worker", "tlbench")
PRODUCT_FILES = ("Procfile", "Dockerfile", "docker-compose.yml")


def plain(markdown: str) -> str:
    """Markdown as a reader reads it: no code marks, one space between words."""
    return " ".join(markdown.replace("`", "").split())


def section(markdown: str, heading: str) -> str:
    """The text under a heading, up to the next heading of the same level or above."""
    level = heading.split(" ")[0]
    start = markdown.index(f"\n{heading}\n")
    following = re.search(rf"\n#{{1,{len(level)}}} ", markdown[start + 1:])
    return markdown[start: start + 1 + following.start()] if following else markdown[start:]


@pytest.mark.parametrize("doc", ["docs/api.md", "docs/security.md"])
def test_the_docs_state_the_host_rule_in_the_words_of_up_help(doc):
    assert EXPOSURE_RULE in plain((ROOT / doc).read_text())


def test_the_sample_benchmark_api_md_describes_is_the_one_the_server_runs():
    api = (ROOT / "docs/api.md").read_text()
    start = api.index("`POST /api/v1/benchmarks/sample`")
    described = plain(api[start: api.index("\n\n", start)])
    assert "the seed's five backbones, each at its smallest size" in described
    assert SAMPLE_BENCHMARK["backbones"] == list(SEED_BACKBONES) and len(SEED_BACKBONES) == 5
    assert SAMPLE_BENCHMARK["image_size"] == {name: get_backbone(name).min_size for name in SEED_BACKBONES}
    for words in (f"{SAMPLE_BENCHMARK['epochs']} epochs", f"{SAMPLE_BENCHMARK['repeats']} repeats",
                  f"batch size {SAMPLE_BENCHMARK['batch_size']}", f"patience {SAMPLE_BENCHMARK['patience']}",
                  f"weights {SAMPLE_BENCHMARK['weights']}", "the default splits"):
        assert words in described, f"{words!r} is not in {described!r}"
    assert set(SAMPLE_BENCHMARK) == {"name", "backbones", "image_size", "epochs", "batch_size", "patience",
                                     "weights", "repeats"}, "a new field of the sample: describe it in docs/api.md"


def tlbench_variables() -> set[str]:
    """Every TLBENCH_* name in the product's code and start files."""
    paths = [path for folder in PRODUCT_CODE for path in (ROOT / folder).rglob("*.py")]
    paths += [ROOT / name for name in PRODUCT_FILES]
    return {name for path in paths for name in re.findall(r"\bTLBENCH_[A-Z_]*[A-Z]\b", path.read_text())}


def test_the_settings_section_of_operations_md_names_every_tlbench_variable():
    settings = section((ROOT / "docs/operations.md").read_text(), "## Settings")
    names = tlbench_variables()
    assert {"TLBENCH_HOME", "TLBENCH_MAX_UPLOAD_MB", "TLBENCH_LOCK_DIR"} <= names  # the search finds them
    missing = sorted(name for name in names if f"`{name}`" not in settings)
    assert missing == [], f"docs/operations.md, Settings, does not name {missing}"
