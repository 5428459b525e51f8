"""Benchmarks of tlbench itself: speed of the job code, end-to-end timings."""
