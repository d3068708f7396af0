"""Stage: the Slicer-free halves of the front ends: which volume is which sequence, the panel's controls and their
one clamp, the results table, the packages Slicer needs, and the background prediction process."""
