"""Scorers, one file per family (clip.py, ...). Registered by name in harness.registry."""
