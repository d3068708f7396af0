"""Synthetic cases with ground truth: clean BraTS-like phantoms, realistic ones (tumors grown along anatomy,
appearance randomized around contrasts measured on real scans; measured by ``realism``) and raw clinical
examinations made from either (skull, own pose and grid per sequence, NIfTI or DICOM)."""
