"""`python -m harness ...`, which is also what `accelerate launch -m harness` and torchrun start."""

from harness.cli import main

if __name__ == "__main__":
    main()
