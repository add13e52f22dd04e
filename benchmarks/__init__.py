"""Benchmark adapters, one file (or package) per benchmark family, with their data files in data/.

``PLUGINS`` is this package's plug-in table, which the harness finds through the entry point
``harness.plugins`` in pyproject.toml: name -> ("module:Class", one line for `harness ls`).
Importing this file imports nothing else, so `harness ls` stays fast.
"""

PLUGINS = {
    "benchmarks": {
        "winoground": ("benchmarks.winoground:Winoground",
                       "Winoground 2x2 swaps (Thrush et al. 2022): text, image and group score; "
                       "hardness-tag subsets"),
        "aro": ("benchmarks.aro:ARO",
                "ARO (Yuksekgonul et al. 2023): vg-relation, vg-attribution, coco-order, flickr30k-order"),
        "zeroshot": ("benchmarks.zeroshot:ZeroShot",
                     "CLIP zero-shot classification with prompt ensembles: cifar10, cifar100, imagenet1k, "
                     "folder:/torchvision:/hf:"),
        "shapes": ("benchmarks.shapes:Shapes",
                   "generated two-object scenes (no download): winoground, relation, attribute and zeroshot subsets"),
        "sugarcrepe": ("benchmarks.sugarcrepe:SugarCrepe",
                       "SugarCrepe (Hsieh et al. 2023): seven replace/swap/add hard-negative subsets"),
        "whatsup": ("benchmarks.whatsup:WhatsUp",
                    "What'sUp (Kamath et al. 2023): spatial prepositions, Controlled-A/B, COCO- and GQA-spatial"),
        "colorswap": ("benchmarks.colorswap:ColorSwap",
                      "ColorSwap (Burapacheep et al. 2024): colour-word swaps, Winoground text/image/group"),
        "mmvp-vlm": ("benchmarks.mmvp:MMVPVLM",
                     "MMVP-VLM (Tong et al. 2024): CLIP-blind image pairs in 9 visual patterns, pair accuracy"),
        "clevr": ("benchmarks.clevr:CLEVR",
                  "CLEVR binding and spatial subtasks as DiffusionITM's GDBench defines them (Krojer et al. 2023)"),
        "svo-probes": ("benchmarks.svo_probes:SVOProbes",
                       "SVO-Probes (Hendricks & Nematzadeh 2021): subject, verb and object negative images, "
                       "as GDBench uses them"),
        "eqben": ("benchmarks.eqben:EqBen",
                  "EqBen (Wang et al. 2023) 10% subset: visual-minimal 2x2 swaps, text/image/group per sub-dataset"),
        "spec": ("benchmarks.spec:Spec",
                 "SPEC (Peng et al. 2024): size, position, existence and count; image-to-text and text-to-image"),
        "retrieval": ("benchmarks.retrieval:Retrieval",
                      "image-text retrieval, recall@1/5/10 both ways: coco (Karpathy 5k test), flickr30k (1k test)"),
        "sugarcrepe-pp": ("benchmarks.sugarcrepe_pp:SugarCrepePP",
                          "SugarCrepe++ (Dumpala et al. 2024): two positives and a negative; ITT and text-only TOT"),
        "valse": ("benchmarks.valse:VALSE",
                  "VALSE (Parcalabescu et al. 2022): caption vs foil in 11 instruments of 6 pieces; acc_r"),
        "file": ("benchmarks.file:FileBenchmark",
                 "your own images and captions from a .jsonl or .csv file: --bench file:PATH (1xK accuracy, 2x2 "
                 "Winoground scores)"),
    },
}
