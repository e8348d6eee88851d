"""Benchmarks of the abc_gym credit modes (dense vs sparse reward); run ``python -m benchmarks.dense_vs_sparse -h``."""
