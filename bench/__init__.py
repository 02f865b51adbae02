"""Benchmarks of the refresh engine against a timer-driven baseline (see bench/README.md)."""
