"""Studies run with the harness, one package each. ``shapes/`` is the SDS-CLIP experiment in
miniature: the toy models' training recipe, the experiment's orchestration, its figures, and the
`harness toy` commands.

``PLUGINS`` is this package's plug-in table, which the harness finds through the entry point
``harness.plugins`` in pyproject.toml. Importing this file imports nothing else.
"""

PLUGINS = {
    "commands": {
        "toy": ("experiments.shapes.cli:app",
                "The toy models of the shapes world: train them, and run the SDS-CLIP experiment on them."),
    },
}
