"""Stage: scans in, one case out: files or DICOM series found, read in full and checked, reoriented, registered to
the T1CE and brain-extracted, and brought onto the T1CE grid and into the network's space (``prepare_case``)."""
