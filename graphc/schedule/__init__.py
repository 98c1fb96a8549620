"""Fusion into kernels and the schedule/buffer plan."""
