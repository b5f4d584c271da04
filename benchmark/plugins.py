"""The plugin registries and the built-in plugins (registered lazily).

Third-party packages add plugins through entry points, e.g. in their pyproject::

    [project.entry-points."stbench.methods"]
    mymethod = "my_package.my_module:MyMethod"
"""

from __future__ import annotations

from stbench.registry import Registry

METHODS: Registry = Registry("method", group="stbench.methods")
DATASETS: Registry = Registry("dataset", group="stbench.datasets")
ENCODERS: Registry = Registry("encoder", group="stbench.encoders")
#: Gene representations of the zero-shot track (``genes.representation=NAME``).
REPRESENTATIONS: Registry = Registry("representation", group="stbench.representations")

_BUILTIN_METHODS = {
    "mean_expression": "stbench.methods.mean_expression:MeanExpression",
    "ridge": "stbench.methods.ridge:Ridge",
    "bilinear": "stbench.methods.bilinear:Bilinear",
    "alignst": "stbench.methods.alignst:AlignST",
    "sgn": "stbench.methods.sgn:SGN",
    "genequery": "stbench.methods.genequery:GeneQuery",
    "textknn": "stbench.methods.textknn:TextKNN",
    "seen_mean": "stbench.methods.seen_mean:SeenMean",
    "shuffled_text": "stbench.methods.shuffled_text:ShuffledText",
    "stnet": "stbench.methods.stnet:STNet",
    "histogene": "stbench.methods.histogene:HisToGene",
    "bleep": "stbench.methods.bleep:BLEEP",
    "hist2st": "stbench.methods.hist2st:Hist2ST",
}
_BUILTIN_DATASETS = {
    "demo": "stbench.datasets.demo:DemoDataset",
    "her2st": "stbench.datasets.her2st:Her2stDataset",
    "cscc": "stbench.datasets.cscc:CsccDataset",
    "hest": "stbench.datasets.hest:HestDataset",
    "visium": "stbench.datasets.visium:VisiumDataset",
    "h5ad": "stbench.datasets.h5ad:H5adDataset",
}
_BUILTIN_ENCODERS = {
    "handcrafted": "stbench.features.handcrafted:HandcraftedEncoder",
    "efficientnet_lite0": "stbench.features.image_encoders:EfficientNetLite0Encoder",
    "timm": "stbench.features.image_encoders:TimmEncoder",
    "open_clip": "stbench.features.image_encoders:OpenClipEncoder",
}
_BUILTIN_REPRESENTATIONS = {
    "minilm": "stbench.features.representations:MiniLMRepresentation",
    "tfidf": "stbench.features.representations:TfidfRepresentation",
    "hf": "stbench.features.representations:HFRepresentation",
    "open_clip": "stbench.features.representations:OpenClipRepresentation",
    "table": "stbench.features.representations:TableRepresentation",
    "go": "stbench.features.representations:GoRepresentation",
}

for _name, _target in _BUILTIN_METHODS.items():
    METHODS.register(_name, _target)
for _name, _target in _BUILTIN_DATASETS.items():
    DATASETS.register(_name, _target)
for _name, _target in _BUILTIN_ENCODERS.items():
    ENCODERS.register(_name, _target)
for _name, _target in _BUILTIN_REPRESENTATIONS.items():
    REPRESENTATIONS.register(_name, _target)
