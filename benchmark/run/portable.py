"""Results are meant to be shared: what a result says about its inputs, without local paths.

A result names its dataset by name, version and a content digest of what was read
(:func:`dataset_digest`); input files given as settings (a panel file, an unseen-gene list, a
description table, encoder weights) by file name and sha256 (:func:`portable_config`).
Locations on the machine that ran it (data root, cache, tracking folder, storage URLs) stay in
the local MLflow run only.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from stbench.data import Slide

#: Settings that name a location on the machine rather than an input file.
_LOCATION_KEYS = ("root", "dir", "storage", "uri", "cache_dir")
_FILE_KEYS = ("descriptions", "weights", "embeddings", "text_model")
_URI_PATH = re.compile(r"^(sqlite|file):/{2,}", re.IGNORECASE)


def dataset_digest(slides: Sequence[Slide]) -> str:
    """sha256 over every section read: names, image bytes, spot ids, coordinates, counts."""
    h = hashlib.sha256()
    for s in sorted(slides, key=lambda s: s.name):
        h.update(f"{s.name}\0{s.patient}\0{s.image.digest()}\0".encode())
        for names in (s.adata.obs_names, s.adata.var_names):
            h.update("\0".join(map(str, names)).encode())
        h.update(np.ascontiguousarray(s.adata.obsm["spatial"], dtype=np.float64).tobytes())
        x = s.adata.X
        if sp.issparse(x):
            x = x.tocsr()
            for part in (x.data, x.indices, x.indptr):
                h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


def is_local_path(value: Any) -> bool:
    """An absolute or home-relative path, or a ``sqlite:``/``file:`` URL of one."""
    if not isinstance(value, str) or not value:
        return False
    return os.path.isabs(value) or value.startswith("~") or bool(_URI_PATH.match(value))


def _names_a_file(key: str, value: Any) -> bool:
    """Whether a setting can name an input file (not a plugin name that happens to exist)."""
    if not isinstance(value, str) or not value:
        return False
    k = key.lower()
    return (k.endswith(("_file", "_path")) or k in _FILE_KEYS or os.sep in value
            or value.startswith("~"))


def _file_record(value: str) -> dict[str, str] | None:
    from stbench.features.weights import sha256_file

    path = Path(os.path.expanduser(value))
    if path.is_file():
        return {"name": path.name, "sha256": sha256_file(path)}
    return None


def portable_config(config: dict, prefix: str = "") -> tuple[dict, dict[str, dict[str, str]]]:
    """The resolved config without local paths, and the input files it named.

    Every string setting that is an existing file (absolute or relative) is recorded as
    ``{key: {"name": file name, "sha256": digest}}`` and replaced by its file name; any other
    absolute path or storage URL (a data root, the cache, the tracking folder) becomes None.

    Returns:
        The portable config and the input-file records.
    """
    out: dict = {}
    inputs: dict[str, dict[str, str]] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out[key], nested = portable_config(value, f"{dotted}.")
            inputs.update(nested)
            continue
        record = _file_record(value) if _names_a_file(key, value) else None
        if record is not None and key.lower() not in _LOCATION_KEYS:
            inputs[dotted] = record
            out[key] = record["name"]
        elif is_local_path(value):
            out[key] = None
        else:
            out[key] = value
    return out, inputs


def local_paths_in(obj: Any, where: str = "") -> list[str]:
    """Where ``obj`` (a JSON-like value) holds a local path: for tests and checks."""
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in local_paths_in(v, f"{where}.{k}")]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in local_paths_in(v, f"{where}[{i}]")]
    return [where] if is_local_path(obj) else []
