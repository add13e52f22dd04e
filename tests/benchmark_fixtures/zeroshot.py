from pathlib import Path


def write(root: Path, n: int) -> None:
    from factories_zeroshot import write_zeroshot_fixture

    # without ImageNet: its 1,000 classes x 80 prompts take minutes for the tiny CLIP on 2 cores
    write_zeroshot_fixture(root, n_per_class=2, imagenet=False)
