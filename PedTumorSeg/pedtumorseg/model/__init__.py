"""PedTumorSegNet (paper §2.2-2.5): network, building blocks, small-scale init, presets."""

from pedtumorseg.model.init import DEFAULT_ALPHA, small_scale_init_
from pedtumorseg.model.network import PedTumorSegNet
from pedtumorseg.model.presets import PRESETS, build_network, network_kwargs

__all__ = ["DEFAULT_ALPHA", "PRESETS", "PedTumorSegNet", "build_network", "network_kwargs", "small_scale_init_"]
