from pathlib import Path


def write(root: Path, n: int) -> dict:
    """Generated on the fly: nothing to write; ``n`` items per subset keep the tests small."""
    return {"n": n}
