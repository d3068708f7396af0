"""The repository stands alone and claims what the paper claims (no links outside it, no "winner")."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
USER_TEXTS = ["README.md", "DEVELOPING.md", "CMakeLists.txt", "PedTumorSeg/PedTumorSeg.py",
              "PedTumorSegTraining/README.md", "Resources/Models/pedtumorseg-demo.md"]


@pytest.mark.parametrize("name", USER_TEXTS)
def test_no_link_outside_the_repository_and_no_winner_claim(name):
    text = (ROOT / name).read_text(encoding="utf-8")
    assert "../shared" not in text and "shared/seeds" not in text and "DESIGN.md" not in text
    assert "winner" not in text.lower()


def test_readme_cites_the_paper_and_says_what_it_reports():
    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "Towards Reliable Pediatric Brain Tumor Segmentation: Task-Specific nnU-Net Enhancements" in text
    assert "validation leaderboard" in text and '"among the top" on the test set' in text


def _words(text: str) -> str:
    return " ".join(text.replace(">", " ").split())


def test_the_readme_quotes_the_model_card_numbers_verbatim():
    """The README's figures of the shipped model are the model card's "In one paragraph", word for word (the README
    once quoted bundle 0.3.0's scores while the card was at 0.5.0)."""
    card = (ROOT / "Resources/Models/pedtumorseg-demo.md").read_text(encoding="utf-8")
    section = card.split("## In one paragraph", 1)[1].split("\n## ", 1)[0]
    paragraph = _words("\n".join(line for line in section.splitlines() if not line.startswith("<!--")))
    assert paragraph and any(ch.isdigit() for ch in paragraph)
    assert paragraph in _words((ROOT / "README.md").read_text(encoding="utf-8"))
    version = json.loads(zipfile.ZipFile(ROOT / "Resources/Models/pedtumorseg-demo.zip").read("manifest.json"))["version"]
    assert f"bundle {version}" in paragraph, "the card's paragraph names another bundle version than the shipped one"


def test_every_score_in_the_readme_is_in_the_model_card():
    """Any score (0.xy or 0.xyz) the README states about the model (in its notes on the shipped model, or beside the
    word Dice) is one the model card states too; parameter defaults such as 0.766 are not scores."""
    import re

    card = (ROOT / "Resources/Models/pedtumorseg-demo.md").read_text(encoding="utf-8")
    readme = "\n".join(line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
                       if line.startswith(">") or "Dice" in line)
    for value in re.findall(r"(?<![\d.])0\.\d{2,3}(?![\d])", readme):
        assert value in card, f"README states {value}, which the model card does not"


def test_code_and_its_docstrings_never_point_outside_the_repository():
    for path in sorted((ROOT / "PedTumorSeg").rglob("*.py")) + sorted((ROOT / "PedTumorSegTraining").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for needle in ("../shared", "shared/seeds", "shared/data", "DESIGN §", "DESIGN.md"):
            assert needle not in text, f"{path.relative_to(ROOT)} mentions {needle}"
