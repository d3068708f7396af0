"""Synthetic cases with known ground truth: clean BraTS-like phantoms (tests, the demo, training the demo model)
and raw clinical examinations made from them (skull, own pose and grid per sequence, NIfTI or DICOM)."""
