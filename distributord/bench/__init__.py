"""Benchmarks: ``python -m distributord.bench.<name>``; each prints its figures."""
