from pathlib import Path

from factories import write_winoground_parquet


def write(root: Path, n: int) -> None:
    write_winoground_parquet(root / "winoground", n)
