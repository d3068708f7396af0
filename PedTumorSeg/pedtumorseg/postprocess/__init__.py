"""Stage: post-processing of the network's labels (paper §2.6: T1CE/T1 ratio relabel, small-component removal) and
the interactive slider session that re-applies only what a slider changed."""

from pedtumorseg.postprocess.components import dilate_cube, remove_small_components
from pedtumorseg.postprocess.params import (MIN_VOLUME_KEYS, NORMALIZATIONS, PARAMETERS, Parameter,
                                           PostprocessParams)
from pedtumorseg.postprocess.ratio import brain_mask, ratio_map, relabel_by_ratio
from pedtumorseg.postprocess.session import Session, postprocess

__all__ = ["MIN_VOLUME_KEYS", "NORMALIZATIONS", "PARAMETERS", "Parameter", "PostprocessParams", "Session",
           "brain_mask", "dilate_cube", "postprocess", "ratio_map", "relabel_by_ratio", "remove_small_components"]
