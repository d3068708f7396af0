"""Stage: what a result becomes on disk: label maps and images written atomically and read back, the per-case
stats JSON, the overlay PNG, DICOM SEG, the segment terminology, and the output paths of a case."""
