"""stbench: a benchmark suite for predicting spatial transcriptomics from H&E histology."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stbench")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
