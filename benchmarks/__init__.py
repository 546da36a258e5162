"""Benchmarks: `python -m benchmarks.<name>`; each prints figures and a final one-line JSON summary."""
