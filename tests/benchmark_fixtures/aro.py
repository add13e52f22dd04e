from pathlib import Path

from factories import toy_tagger, write_aro


def write(root: Path, n: int) -> None:
    write_aro(root, n_images=3)
    from benchmarks.aro import ARO

    ARO(root, tagger=toy_tagger).items()  # freeze the order options without spaCy
