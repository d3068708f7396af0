"""PedTumorSeg training: nnU-Net v2 based training of the enhanced nnU-Net (paper §3) and bundle export.

Subcommands of ``pedtumorseg-train`` (see ``cli.py``): convert, plan, train, export, fit-postprocessing, evaluate.
This package imports nnunetv2; the core package ``pedtumorseg`` never does.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
