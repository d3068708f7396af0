"""Which loaded volume is which sequence: names classified into T1 / T1CE / T2 / FLAIR, and the selection checked
(the panel's auto-assignment and its Apply button; the web app uses the same)."""

from __future__ import annotations

import re
from typing import Iterable, Mapping

from pedtumorseg.conventions import CHANNEL_LONG_NAMES, CHANNELS, strip_image_extension


# Name patterns per channel, as token sequences of the normalized name (lower case, runs of "_", "-", " ", "."
# turned into "_"). Checked in this order, so "t2_flair" is FLAIR and never T2, and "t1_gd" is T1CE, never T1.
_CHANNEL_PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("flair", ("t2f", "flair", "t2_flair", "t2flair", "flair_t2", "tirm", "dark_fluid")),
    ("t1ce", ("t1c", "t1ce", "t1gd", "t1_gd", "t1_ce", "t1_c", "t1_post", "t1post", "t1_postcontrast",
              "t1_contrast", "t1_gad", "t1gad", "t1_gado", "t1wce", "t1w_ce", "t1w_gd", "t1w_post", "ce_t1",
              "ce_t1w", "gd_t1", "post_t1", "t1\\+c", "t1\\+gd", "t1_\\+c", "postcontrast", "post_contrast", "mprage_gd")),
    ("t2", ("t2w", "t2", "t2_w", "t2_weighted", "t2_tse", "t2tse")),
    ("t1", ("t1n", "t1", "t1w", "t1_w", "t1_native", "t1_pre", "t1pre", "t1_precontrast", "t1_weighted", "native_t1",
            "mprage")),
)
_COMPILED = tuple(
    (channel, tuple(re.compile(r"(?:^|_)" + p + r"(?:$|_)") for p in patterns))
    for channel, patterns in _CHANNEL_PATTERNS
)


def normalize_name(name: str) -> str:
    """Lower case, file extension removed, separators (``_ - space .``) collapsed to single ``_``."""
    text = str(name).strip().lower()
    text = strip_image_extension(text) or text
    text = re.sub(r"[\s_\-.]+", "_", text)
    return text.strip("_")


def classify_name(name: str) -> str | None:
    """The channel a volume name denotes (``t1``, ``t1ce``, ``t2``, ``flair``) or None."""
    text = normalize_name(name)
    for channel, patterns in _COMPILED:
        if any(p.search(text) for p in patterns):
            return channel
    return None


def assign_inputs(names: Iterable[str]) -> dict[str, str]:
    """Map channels to volume names, e.g. ``{"t1": "BraTS-PED-00001-000-t1n", ...}``.

    Each name is classified by :func:`classify_name`; the first name (in the given order) of each channel wins.
    A channel with no matching name is absent from the result. No name is assigned twice (the same name listed
    twice is used once).
    """
    result: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        if name in used:
            continue
        channel = classify_name(name)
        if channel is not None and channel not in result:
            result[channel] = name
            used.add(name)
    return result


def validate_inputs(selection: Mapping[str, object | None]) -> list[str]:
    """Problems with a channel -> volume selection (any hashable id per volume, None = not selected).

    Returns one message per problem (empty list = can run): a missing channel, or one volume used for two
    channels.
    """
    problems: list[str] = []
    for channel in CHANNELS:
        if selection.get(channel) is None:
            problems.append(f"select the {CHANNEL_LONG_NAMES[channel]} volume")
    seen: dict[object, str] = {}
    for channel in CHANNELS:
        value = selection.get(channel)
        if value is None:
            continue
        if value in seen:
            problems.append(f"the same volume is selected as {CHANNEL_LONG_NAMES[seen[value]]} and as "
                            f"{CHANNEL_LONG_NAMES[channel]}")
        else:
            seen[value] = channel
    return problems
