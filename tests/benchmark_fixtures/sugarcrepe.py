from pathlib import Path

from factories import write_sugarcrepe


def write(root: Path, n: int) -> None:
    write_sugarcrepe(root, per_subset=n)
