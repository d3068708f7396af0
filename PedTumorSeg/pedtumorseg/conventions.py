"""Fixed conventions shared by every part of PedTumorSeg.

Labels, derived regions, colors, channel order and the file-name patterns of a case. Everything that needs
one of these imports it from here; nothing else hard-codes them.
"""

from __future__ import annotations

# --- labels -------------------------------------------------------------------------------------------
BACKGROUND = 0
ET = 1  # enhancing tumor
NET = 2  # non-enhancing tumor
CC = 3  # cystic component
ED = 4  # peritumoral edema

#: label value -> short name
LABEL_NAMES: dict[int, str] = {ET: "ET", NET: "NET", CC: "CC", ED: "ED"}
#: label value -> name shown to users (Slicer segment names)
LABEL_LONG_NAMES: dict[int, str] = {
    ET: "Enhancing tumor",
    NET: "Non-enhancing tumor",
    CC: "Cystic component",
    ED: "Edema",
}
#: label value -> RGB in [0, 1] (paper Fig. 1: ET red, NET green, CC yellow, ED teal)
LABEL_COLORS: dict[int, tuple[float, float, float]] = {
    ET: (1.0, 0.0, 0.0),
    NET: (0.0, 0.8, 0.0),
    CC: (1.0, 1.0, 0.0),
    ED: (0.0, 0.5, 0.5),
}
FOREGROUND_LABELS: tuple[int, ...] = (ET, NET, CC, ED)
NUM_CLASSES = 5  # softmax outputs: background + 4 labels

#: region name -> labels it contains; single labels first, then the derived regions TC and WT
REGIONS: dict[str, tuple[int, ...]] = {
    "ET": (ET,),
    "NET": (NET,),
    "CC": (CC,),
    "ED": (ED,),
    "TC": (ET, NET, CC),
    "WT": (ET, NET, CC, ED),
}

# --- channels and file names ----------------------------------------------------------------------------
#: channel order of every image stack and of the network input
CHANNELS: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
CHANNEL_LONG_NAMES: dict[str, str] = {"t1": "T1", "t1ce": "T1CE", "t2": "T2", "flair": "T2-FLAIR"}
#: BraTS 2023+ file suffixes, in channel order
BRATS_SUFFIXES: dict[str, str] = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}
#: legacy BraTS (2018-2021) suffixes, in channel order
LEGACY_SUFFIXES: dict[str, str] = {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair"}
SEG_SUFFIX = "seg"
#: the channel whose grid is the reference geometry of a case
REFERENCE_CHANNEL = "t1ce"
IMAGE_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def strip_image_extension(name: str, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> str | None:
    """``name`` without its image extension (the longest of ``extensions`` it ends with, any case), or None."""
    low = name.lower()
    for ext in sorted(extensions, key=len, reverse=True):
        if low.endswith(ext):
            return name[: -len(ext)]
    return None
