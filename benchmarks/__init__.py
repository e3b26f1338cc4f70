"""Benchmarks: `make bench` (or `python -m benchmarks --help`); results in benchmarks/README.md."""
