"""ALIGN-ST (Zhou et al., MICCAI 2025): zero-shot spatial transcriptomics prediction.

``AlignST`` is the method plugin (registered as ``alignst``); :mod:`.model` holds the
``nn.Module``s and :mod:`.interpret` the plots. Design notes: ``methods/README_alignst.md``.
"""

from .method import AlignST

__all__ = ["AlignST"]
