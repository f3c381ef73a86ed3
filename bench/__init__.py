"""Benchmarks behind BENCHMARKS.md; each script prints its figures and how to rerun it."""
