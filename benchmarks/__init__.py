"""Benchmark adapters, one file per family (winoground.py, ...). Registered by name in harness.registry."""
