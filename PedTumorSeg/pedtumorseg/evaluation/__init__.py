"""Stage: scoring against ground truth: the BraTS 2024/2025 PED lesion-wise metrics, folder scoring, the
statistics of the clinical comparison, the HTML report, and the 2026 challenge scorer."""
