"""Benchmark adapters, one file (or package) per benchmark family, with their data files in data/.

``PLUGINS`` is this package's plug-in table, which the harness finds through the entry point
``harness.plugins`` in pyproject.toml: name -> ("module:Class", one line for `harness ls`).
Importing this file imports nothing else, so `harness ls` stays fast.
"""

PLUGINS = {
    "benchmarks": {
        "winoground": ("benchmarks.winoground:Winoground",
                       "Winoground 2x2 swaps (Thrush et al. 2022): text, image and group score"),
        "aro": ("benchmarks.aro:ARO",
                "ARO (Yuksekgonul et al. 2023): vg-relation, vg-attribution, coco-order, flickr30k-order"),
        "zeroshot": ("benchmarks.zeroshot:ZeroShot",
                     "CLIP zero-shot classification with prompt ensembles: cifar10, cifar100, imagenet1k, "
                     "folder:/torchvision:/hf:"),
        "shapes": ("benchmarks.shapes:Shapes",
                   "generated two-object scenes (no download): winoground, relation, attribute and zeroshot subsets"),
        "sugarcrepe": ("benchmarks.sugarcrepe:SugarCrepe",
                       "SugarCrepe (Hsieh et al. 2023): seven replace/swap/add hard-negative subsets"),
        "file": ("benchmarks.file:FileBenchmark",
                 "your own images and captions from a .jsonl or .csv file: --bench file:PATH (1xK accuracy, 2x2 "
                 "Winoground scores)"),
    },
}
