"""Lesions as connected components of a region, and their matching across the timepoints of one patient.

A region's lesions are its 26-connected components (``scipy.ndimage.label``) on the scan's own grid. To match them across scans,
each follow-up's components are also drawn on the baseline grid through the rigid registration (nearest
neighbour); a follow-up lesion continues the track whose last appearance it overlaps most (in baseline voxels),
and one track takes at most one lesion per timepoint (greedy on the overlap, largest first). A follow-up lesion
that overlaps no track starts a new track (flagged ``new``); a track without a lesion at a timepoint is
``absent`` there (``disappeared`` when it had one before).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from pedtumorseg.conventions import REGIONS

#: the region of each measured lesion kind: the enhancing part, and the T2/FLAIR lesion (every label)
MEASURED_REGIONS = {"ET": "ET", "T2FLAIR": "WT"}


def region_mask(labels: np.ndarray, region: str) -> np.ndarray:
    """Voxels of ``labels`` in ``region`` (ET, NET, CC, ED, TC or WT)."""
    return np.isin(labels, REGIONS[region])


def components(mask: np.ndarray) -> np.ndarray:
    """26-connected components of ``mask``, numbered 1..n by decreasing size (ties: first voxel in C order).

    ``scipy.ndimage.label`` (a core dependency, also in Slicer's Python) rather than cc3d, which the core does not
    require."""
    cc, n = ndimage.label(np.asarray(mask) != 0, structure=np.ones((3, 3, 3), bool))
    cc = cc.astype(np.int32)
    if n == 0:
        return cc.astype(np.int32)
    sizes = np.bincount(cc.ravel())[1:]
    order = np.argsort(-sizes, kind="stable")  # numbered in scan order: stable keeps that for ties
    relabel = np.zeros(n + 1, np.int32)
    relabel[order + 1] = np.arange(1, n + 1)
    return relabel[cc]


@dataclass
class Track:
    """One lesion followed over time: its main component number at each timepoint (0 = absent), the further
    components it split into (``parts[t]``) and the track it merged into (``merged_into[t]``)."""

    track_id: int
    first_seen: int
    component: list[int] = field(default_factory=list)
    parts: dict[int, list[int]] = field(default_factory=dict)
    merged_into: dict[int, int] = field(default_factory=dict)

    def components_at(self, t: int) -> list[int]:
        return ([self.component[t]] if self.component[t] else []) + self.parts.get(t, [])

    def status(self, t: int) -> str:
        if self.component[t]:
            if t == self.first_seen and t > 0:
                return "new"
            return "split" if self.parts.get(t) else "present"
        if t in self.merged_into:
            return "merged"
        return "disappeared" if any(self.component[:t]) else "absent"


def _overlaps(comp: np.ndarray, track_map: np.ndarray, tracks: list[Track]) -> list[tuple]:
    """(overlap in voxels, component, track) of every overlapping pair, largest first (one pass over the grid)."""
    both = (comp > 0) & (track_map > 0)
    if not both.any():
        return []
    keys = comp[both].astype(np.int64) * (len(tracks) + 1) + track_map[both]
    values, counts = np.unique(keys, return_counts=True)
    pairs = [(int(n), int(v // (len(tracks) + 1)), tracks[int(v % (len(tracks) + 1)) - 1])
             for v, n in zip(values, counts)]
    return sorted(pairs, key=lambda p: (-p[0], p[1], p[2].track_id))


def match_lesions(on_baseline: list[np.ndarray], counts: list[int]) -> list[Track]:
    """Tracks over the timepoints from each timepoint's component map on the baseline grid (timepoint 0 first).

    ``on_baseline[t]``: int array, the component numbers of timepoint ``t`` (numbered on its own grid, 1 ..
    ``counts[t]``) drawn on the baseline grid. Greedy on the overlap, largest first: each track takes one main
    component. A further component that overlaps a track already served is a part the lesion split into (its
    product is summed with the main one's, as the criteria sum fragments); a track whose footprint overlaps only a
    component another track took has merged into it (the merged lesion is measured once, under that track). A
    component that overlaps nothing (also one outside the baseline's field of view) starts a new track. The
    footprints live in one map of the baseline grid (each track's last appearance; where two meet the later wins),
    so matching is one pass over the grid per timepoint whatever the number of lesions.
    """
    tracks: list[Track] = []
    track_map = np.zeros(on_baseline[0].shape, np.int32)  # each track's last appearance on the baseline grid
    for t, comp in enumerate(on_baseline):
        present = list(range(1, int(counts[t]) + 1))
        for track in tracks:
            track.component.append(0)
        pairs = _overlaps(comp, track_map, tracks)
        owner: dict[int, Track] = {}
        for overlap, c, track in pairs:
            if c not in owner and not track.component[t]:
                track.component[t] = c
                owner[c] = track
        for overlap, c, track in pairs:
            if c not in owner:  # the track has its main component already: a fragment of it
                track.parts.setdefault(t, []).append(c)
                owner[c] = track
            elif not track.component[t] and t not in track.merged_into and owner[c] is not track:
                track.merged_into[t] = owner[c].track_id
        for c in present:
            if c not in owner:
                tracks.append(Track(len(tracks) + 1, t, [0] * t + [c]))
        seen = [track for track in tracks if track.components_at(t)]
        track_map[np.isin(track_map, [track.track_id for track in seen])] = 0
        for track in seen:  # a later appearance replaces the earlier one (where footprints meet, the last wins)
            track_map[np.isin(comp, track.components_at(t))] = track.track_id
    return tracks
