"""The repository stands alone and claims what the paper claims (no links outside it, no "winner")."""

from __future__ import annotations

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
