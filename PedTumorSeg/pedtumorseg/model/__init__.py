"""PedTumorSegNet (paper §2.2-2.5): network, building blocks, small-scale init, presets.

The names below are imported on first use (they need torch); ``pedtumorseg.model.classes`` does not."""

import importlib

_EXPORTS = {"DEFAULT_ALPHA": "init", "small_scale_init_": "init", "PedTumorSegNet": "network", "PRESETS": "presets",
            "build_network": "presets", "network_kwargs": "presets"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pedtumorseg.model' has no attribute {name!r}")
    return getattr(importlib.import_module(f"pedtumorseg.model.{_EXPORTS[name]}"), name)
