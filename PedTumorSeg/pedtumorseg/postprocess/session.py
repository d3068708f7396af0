"""The whole post-processing (:func:`postprocess`) and the interactive :class:`Session` (paper §2.6).

Pipeline (the paper's order): ratio relabel first, then small-component removal.

1. Ratio relabel. ``ratio = norm(T1CE) / norm(T1)`` inside the brain mask. NET -> ET where ``ratio >
   ratio_high``; ET -> NET where ``ratio < ratio_low``; only where the ratio is finite and lies in
   ``[ratio_min, ratio_max]``. Both rules are applied to the raw labels at once (``ratio_low < ratio_high``, so
   they never compete). Normalization ``"zscore"`` (default, the paper's): ``(x - mean) / std`` of each
   modality inside the mask (population std); the paper's thresholds 1.388 / 0.766 were derived for it.
   ``"mean"``: each modality divided by its mean inside the mask — an option whose thresholds must be fitted
   (``pedtumorseg-train fit-postprocessing --normalization mean``); the paper's values are not calibrated for it.
   The window ``[ratio_min, ratio_max] = [0.2, 5]`` is where the paper analysed the ratios to derive the
   thresholds; we apply it at inference too: the thresholds say nothing about ratios outside the range they were
   derived on, and with z-scores those are the meaningless ones (negative ratios, where one modality is below its
   mean and the other above, and blown-up ratios where norm(T1) is near 0). Voxels outside the window keep the
   network's label.
2. Small components, per label with a cut-off > 0 (mm^3): dilate the label's mask once with a 3x3x3 cube,
   take 26-connected components of the dilated mask, volume of a component = number of *original* label
   voxels inside it x voxel volume (product of the anisotropic spacing). Components with volume strictly
   below the cut-off are removed: their voxels become background 0 (the paper says "removed"). Labels are
   treated independently, so the order over labels does not matter. Both choices were measured against the
   other readings (volume of the dilated component; removed voxels filled with the surrounding label, e.g.
   NET for an ET island inside NET) with the lesion-wise Dice on 12 validation phantoms
   (``PedTumorSegTraining/experiments/component_readings.py``): the dilated volume never reaches below 160
   mm^3 at 2.5 mm (a dilated single voxel is already 27 voxels) and lost 0.19 ET Dice; filling changed TC/WT by
   +0.003-0.006 and NET by -0.004, within noise, so the literal reading stays.

:class:`Session` gives exactly the labels :func:`postprocess` gives for the same parameters, recomputing only
what a parameter change touches, inside the tumor bounding box.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from pedtumorseg.arrays import bounding_box, voxel_volume_mm3
from pedtumorseg.conventions import ET, FOREGROUND_LABELS, NET
from pedtumorseg.postprocess.components import ComponentTable, boxed_component_table, remove_small_components, removal_mask
from pedtumorseg.postprocess.params import PostprocessParams
from pedtumorseg.postprocess.ratio import brain_mask, normalization_stats, ratio_map, ratio_with_stats, relabel_by_ratio


def postprocess(raw_labels, t1, t1ce, spacing_zyx, params: PostprocessParams, mask=None) -> np.ndarray:
    """Full pipeline: ratio relabel, then small-component removal. Disabled steps are the identity.

    ``mask`` defaults to :func:`brain_mask` of T1 and T1CE (only these two images are at hand here).
    """
    labels = np.asarray(raw_labels).astype(np.uint8, copy=True)
    if params.ratio_enabled:
        if mask is None:
            mask = brain_mask([t1, t1ce])
        labels = relabel_by_ratio(labels, ratio_map(t1, t1ce, mask, params.normalization), params)
    if params.components_enabled:
        labels = remove_small_components(labels, spacing_zyx, params.min_volume_mm3)
    return labels


class Session:
    """Post-processing state for the interactive sliders (Slicer module and CLI share it).

    Everything happens in the tumor bounding box (raw labels > 0, plus a 2-voxel margin); outside it the
    labels are 0 whatever the parameters. The ratio map is computed once per normalization, only on the box
    of the raw ET/NET voxels (the only ones a relabel can touch; the normalization statistics use the whole
    brain mask). Component tables are cached per label, each on its label's own bounding box. A ratio change
    recomputes the relabel and, if the relabel changed, the component tables of ET and NET only (CC and ED
    voxels are never relabeled); a minimum-volume change only re-filters that label's table. The last few
    relabel states are kept with their tables, so moving a slider back is instant.
    """

    _MARGIN = 2
    _STATES_KEPT = 4

    def __init__(self, raw_labels, t1, t1ce, spacing_zyx, params: PostprocessParams | None = None, mask=None):
        self._raw_full = np.asarray(raw_labels).astype(np.uint8)
        self._t1 = np.asarray(t1)
        self._t1ce = np.asarray(t1ce)
        self._mask_full = None if mask is None else np.asarray(mask, dtype=bool)
        self._voxel_volume = voxel_volume_mm3(spacing_zyx)
        self.spacing_zyx = tuple(float(s) for s in spacing_zyx)
        self._box = bounding_box(self._raw_full > 0, self._MARGIN)
        self._full = np.zeros_like(self._raw_full)
        self._ratio_cache: dict[str, np.ndarray] = {}
        self._states: OrderedDict = OrderedDict()  # relabel key -> (relabeled crop, {ET/NET: table})
        self._tables_cc_ed: dict[int, ComponentTable | None] = {}
        if self._box is not None:
            self._raw = self._raw_full[self._box]
            self._rbox = bounding_box((self._raw == ET) | (self._raw == NET), 0)
        self.reset(params if params is not None else PostprocessParams())

    # -- public ---------------------------------------------------------------------------------------------
    @property
    def params(self) -> PostprocessParams:
        return self._params

    @property
    def labels(self) -> np.ndarray:
        """Current final labels (uint8, full volume). A read-only view, updated in place by :meth:`update`."""
        view = self._full.view()
        view.flags.writeable = False
        return view

    @property
    def raw_labels(self) -> np.ndarray:
        view = self._raw_full.view()
        view.flags.writeable = False
        return view

    def reset(self, params: PostprocessParams) -> set[int]:
        """Apply ``params`` as a whole; returns the labels whose voxels changed."""
        self._params = params
        if self._box is None:
            return set()
        self._select_relabel()
        return self._assemble()

    def update(self, **changes) -> set[int]:
        """Apply parameter changes; returns the set of label values whose voxels changed."""
        new = self._params.replace(**changes)
        old = self._params
        self._params = new
        if self._box is None or new == old:
            return set()
        if self._relabel_key(new) != self._relabel_key(old):
            self._select_relabel()
        return self._assemble()

    def volumes_ml(self) -> dict:
        """:func:`pedtumorseg.arrays.volumes` of the current labels."""
        from pedtumorseg.arrays import volumes

        return volumes(self._full, self.spacing_zyx)

    # -- internals ------------------------------------------------------------------------------------------
    @staticmethod
    def _relabel_key(p: PostprocessParams):
        if not p.ratio_enabled:
            return None
        return (p.normalization, p.ratio_high, p.ratio_low, p.ratio_min, p.ratio_max)

    def _ratio(self, normalization: str) -> np.ndarray:
        if normalization not in self._ratio_cache:
            mask = self._mask_full
            if mask is None:
                mask = self._mask_full = brain_mask([self._t1, self._t1ce])
            stats = normalization_stats(self._t1, self._t1ce, mask, normalization)
            box = tuple(slice(b.start + r.start, b.start + r.stop) for b, r in zip(self._box, self._rbox))
            self._ratio_cache[normalization] = ratio_with_stats(self._t1[box], self._t1ce[box], mask[box], stats)
        return self._ratio_cache[normalization]

    def _select_relabel(self) -> None:
        key = self._relabel_key(self._params)
        if key in self._states:
            self._states.move_to_end(key)
        else:
            relabeled = self._raw.copy()
            if key is not None and self._rbox is not None:
                relabeled[self._rbox] = relabel_by_ratio(self._raw[self._rbox], self._ratio(key[0]), self._params)
            tables: dict[int, ComponentTable | None] = {}
            for other_relabeled, other_tables in self._states.values():  # same voxels -> same tables
                if np.array_equal(other_relabeled, relabeled):
                    relabeled, tables = other_relabeled, other_tables
                    break
            self._states[key] = (relabeled, tables)
            while len(self._states) > self._STATES_KEPT:
                self._states.popitem(last=False)
        self._relabeled, self._tables_et_net = self._states[key]

    def _table(self, label: int) -> ComponentTable | None:
        tables = self._tables_et_net if label in (ET, NET) else self._tables_cc_ed
        if label not in tables:
            tables[label] = boxed_component_table(self._relabeled == label, self._voxel_volume)
        return tables[label]

    def _assemble(self) -> set[int]:
        final = self._relabeled.copy()
        p = self._params
        if p.components_enabled:
            for label, cutoff in p.min_volume_mm3.items():
                if cutoff > 0:
                    table = self._table(label)
                    if table is not None:
                        final[table.box][removal_mask(table, cutoff)] = 0
        previous = self._full[self._box]
        diff = previous != final
        changed: set[int] = set()
        if diff.any():
            values = np.union1d(np.unique(previous[diff]), np.unique(final[diff]))
            changed = {int(v) for v in values if v in FOREGROUND_LABELS}
            previous[...] = final
        return changed

