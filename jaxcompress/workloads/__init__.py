"""Datasets and models used by the CLI, configs and benchmarks."""
