"""The response criteria: their tables (measured lesion, measurability, target lesions, thresholds) and the
category each gives, by the 2D sum of products and by volume.

Every number here has its source in ``CRITERIA[...].source`` and in the README's table; what of the three RAPNO
criteria could not be checked against their papers' text is marked "unverified" in their notes (README, "Where the
numbers come from"). The categories are a
suggestion for the reader: the criteria also weigh what the images cannot show (corticosteroids, clinical
status, non-measurable disease, the time since radiotherapy), which the user gives as :class:`Clinical`.

Rules common to the four criteria as implemented:
- change vs baseline decides CR/PR/MR, change vs nadir (the smallest value so far, baseline included) decides PD;
  a threshold is met at equality (a decrease of exactly 50 % is a PR, an increase of exactly 25 % is PD);
- a new measurable lesion of the measured kind, or clinical deterioration, is PD; reappearance after the measured
  disease had disappeared is PD;
- CR: every lesion of the measured kind gone, no new lesion, off corticosteroids (else at most PR);
- PR and MR need corticosteroids not increased (else SD);
- no measurable disease at baseline: not evaluable (NE) unless progression is shown.
- Volumetric (RANO 2.0's thresholds, applied to every criterion as a secondary read-out): PR <= -65 %,
  PD >= +40 % of the measured kind's total volume; no minor response by volume (none is defined).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: how the slice of a lesion's bidimensional measurement is chosen (``measure.measure_lesion``)
SLICE_RULES = ("largest_diameter", "largest_product")

CATEGORIES = ("CR", "PR", "MR", "SD", "PD", "NE")
_EPS = 1e-9


@dataclass(frozen=True)
class Criterion:
    key: str
    name: str
    source: str
    measured: str  # "ET" (enhancing part) or "T2FLAIR" (the T2/FLAIR lesion): the default, a user may change it
    max_targets: int
    pr_2d: float = -0.50
    mr_2d: float | None = None
    pd_2d: float = 0.25
    pr_volume: float = -0.65
    pd_volume: float = 0.40
    min_diameter_mm: float = 10.0
    slice_thickness_factor: float = 2.0
    min_slices: int = 1
    confirm: tuple[str, ...] = ("CR", "PR")
    notes: tuple[str, ...] = ()

    def thresholds(self, kind: str, measured: str | None = None) -> tuple[float, float | None, float]:
        """(PR, MR or None, PD) as fractional changes for ``kind`` "2d" or "volume"."""
        if kind == "volume":
            return self.pr_volume, None, self.pd_volume
        mr = self.mr_2d
        if self.key == "rano2" and (measured or self.measured) == "T2FLAIR":
            mr = -0.25  # RANO 2.0: minor response exists for non-enhancing tumours measured on T2/FLAIR
        return self.pr_2d, mr, self.pd_2d

    def to_dict(self) -> dict:
        return {"key": self.key, "name": self.name, "source": self.source, "measured": self.measured,
                "max_target_lesions": self.max_targets, "pr_2d": self.pr_2d, "mr_2d": self.mr_2d,
                "pd_2d": self.pd_2d, "pr_volume": self.pr_volume, "pd_volume": self.pd_volume,
                "measurable": f"both diameters >= max({self.min_diameter_mm:g} mm, "
                              f"{self.slice_thickness_factor:g} x slice thickness)"
                              + (f", on >= {self.min_slices} slices" if self.min_slices > 1 else ""),
                "confirmation_needed": list(self.confirm), "notes": list(self.notes)}


CRITERIA: dict[str, Criterion] = {c.key: c for c in (
    Criterion("rapno-hgg", "RAPNO pediatric high-grade glioma",
              "Erker C et al., Lancet Oncol 2020;21(6):e317-e329", "T2FLAIR", 3,
              notes=("the reader measures on the sequence that best shows the tumour (T2/FLAIR in most pediatric "
                     "HGG, T1CE where it enhances) and keeps it for every scan: --measure",
                     "unverified: the PR/PD thresholds and the T2/FLAIR default were not checked against the paper's "
                     "text (its abstract names 'a higher reliance on T2-weighted' FLAIR than in adults); check "
                     "before use in a trial")),
    Criterion("rapno-lgg", "RAPNO pediatric low-grade glioma",
              "Fangusaro J et al., Lancet Oncol 2020;21(6):e305-e316", "T2FLAIR", 5, mr_2d=-0.25,
              notes=("usually one target lesion; up to five when multifocal",
                     "measurable lesions are also to be seen in all three planes (>= 10 mm each); not checked here",
                     "cysts: the criteria give a detailed rule for cystic components; here the T2/FLAIR lesion "
                     "includes them (CC is reported separately)",
                     "unverified: the PR/MR/PD thresholds were not checked against the paper's text; check before "
                     "use in a trial")),
    Criterion("rapno-dipg", "RAPNO diffuse intrinsic pontine glioma / DMG",
              "Cooney TM et al., Lancet Oncol 2020;21(6):e330-e336", "T2FLAIR", 1, pr_2d=-0.25,
              notes=("one target: the pontine tumour (further lesions are non-target)",
                     "unverified: PR at a 25 % decrease of the 2D product (and PD at +25 %) were not checked "
                     "against the paper's text; check before use in a trial")),
    Criterion("rano2", "RANO 2.0 (glioma, adult and pediatric-type)",
              "Wen PY et al., J Clin Oncol 2023;41(33):5187-5199", "ET", 3, min_slices=2,
              notes=("enhancing tumours measured on T1CE; non-enhancing ones on T2/FLAIR (--measure T2FLAIR, "
                     "with a minor response at -25 %)",
                     "volumetric thresholds PR <= -65 %, PD >= +40 %",
                     "within 12 weeks of radiotherapy progression needs confirmation (pseudoprogression)")),
)}


@dataclass(frozen=True)
class Clinical:
    """What the images cannot know, per timepoint, given by the user."""

    on_steroids: bool = False  # above physiological replacement
    steroids_increased: bool = False
    clinically_worse: bool = False

    def to_dict(self) -> dict:
        return {"on_steroids": self.on_steroids, "steroids_increased": self.steroids_increased,
                "clinically_worse": self.clinically_worse}


@dataclass
class Category:
    category: str
    reasons: list[str] = field(default_factory=list)
    change_vs_baseline: float | None = None
    change_vs_nadir: float | None = None

    def to_dict(self) -> dict:
        pct = lambda v: None if v is None else round(100.0 * v, 2)  # noqa: E731
        return {"category": self.category, "reasons": self.reasons,
                "change_vs_baseline_pct": pct(self.change_vs_baseline),
                "change_vs_nadir_pct": pct(self.change_vs_nadir)}


def change(now: float, reference: float) -> float | None:
    """Fractional change of ``now`` against ``reference`` (None when the reference is 0)."""
    return None if reference <= 0 else (now - reference) / reference


def categorize(thresholds: tuple[float, float | None, float], baseline: float, nadir: float, now: float, *,
               disease_gone: bool, new_lesion: bool, clinical: Clinical = Clinical()) -> Category:
    """The category of one follow-up from the measured amount (SPD in mm^2 or volume in mL).

    ``nadir``: the smallest amount before this timepoint (baseline included); ``disease_gone``: no lesion of the
    measured kind is left (measurable or not); ``new_lesion``: a new measurable lesion of that kind.
    """
    pr, mr, pd = thresholds
    vs_base, vs_nadir = change(now, baseline), change(now, nadir)
    out = Category("SD", [], vs_base, vs_nadir)
    progression = []
    if clinical.clinically_worse:
        progression.append("clinical deterioration (given by the user)")
    if new_lesion:
        progression.append("new measurable lesion")
    if vs_nadir is not None and vs_nadir >= pd - _EPS:
        progression.append(f"increase of {100 * vs_nadir:.1f} % vs nadir (PD at >= {100 * pd:g} %)")
    if nadir <= 0 < now and baseline > 0:
        progression.append("measured disease reappeared after it had disappeared")
    if progression:
        out.category, out.reasons = "PD", progression
        return out
    if baseline <= 0:
        out.category, out.reasons = "NE", ["no measurable disease at baseline"]
        return out
    if disease_gone:
        if clinical.on_steroids:
            out.category, out.reasons = "PR", ["disappearance, but CR needs no corticosteroids beyond physiological "
                                               "replacement"]
        else:
            out.category, out.reasons = "CR", ["disappearance of every lesion of the measured kind"]
        return out
    for name, limit in (("PR", pr), ("MR", mr)):
        if limit is not None and vs_base <= limit + _EPS:
            if clinical.steroids_increased:
                out.reasons = [f"{name} by size ({100 * vs_base:.1f} %), but corticosteroids increased: SD"]
                return out
            out.category, out.reasons = name, [f"decrease of {-100 * vs_base:.1f} % vs baseline ({name} at >= "
                                               f"{-100 * limit:g} %)"]
            return out
    out.reasons = [f"{100 * vs_base:+.1f} % vs baseline, {100 * vs_nadir:+.1f} % vs nadir" if vs_nadir is not None
                   else f"{100 * vs_base:+.1f} % vs baseline"]
    return out


def confirmations(categories: list[str | None], needed: tuple[str, ...]) -> list[bool | None]:
    """Per timepoint: whether a CR/PR (those in ``needed``) is confirmed by the next scan showing the same or a
    better response (None: nothing to confirm, or no next scan yet)."""
    rank = {"CR": 0, "PR": 1, "MR": 2}
    out: list[bool | None] = []
    for t, cat in enumerate(categories):
        if cat not in needed:
            out.append(None)
        elif t + 1 >= len(categories) or categories[t + 1] is None:
            out.append(None)
        else:
            nxt = categories[t + 1]
            out.append(nxt in rank and rank[nxt] <= rank[cat])
    return out
