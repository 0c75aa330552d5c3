"""Benchmark scripts, each run as `PYTHONPATH=. .venv/bin/python benchmarks/NAME.py` and writing its
report to results/benchmarks/; tests/benchmarks runs each at a tiny size."""
