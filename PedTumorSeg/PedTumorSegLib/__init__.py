"""Logic of the PedTumorSeg Slicer module: MRML only (no Qt), importable with ``slicer-core`` outside Slicer.

``prediction_logic``: run a prediction; ``segmentation_sync``: keep a segmentation in sync with a post-processing
``Session``; ``logic``: the two together with the panel's MRML decisions (``ModuleLogic``).
"""
