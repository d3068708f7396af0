"""PedTumorSeg core: Slicer-free segmentation of pediatric brain tumors.

Nothing in this package imports slicer, qt or vtk; the 3D Slicer module is a thin layer on top of it.
Array convention everywhere: numpy arrays in SimpleITK order (z, y, x); image stacks (C, z, y, x) with the
channel order of :data:`pedtumorseg.conventions.CHANNELS`; spacings as ``spacing_zyx`` unless named otherwise.
"""

__version__ = "0.1.0"
