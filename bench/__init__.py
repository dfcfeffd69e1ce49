"""Benchmarks: accuracy and speed of SemiREST beside PatchCore on real data (../shared/data/piped)."""
