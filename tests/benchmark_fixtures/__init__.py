"""Fixture writers, one module per registered benchmark: ``write(root: Path, n: int) -> None`` puts a
small copy of the benchmark in its real on-disk layout under the data root ``root``."""
