"""Weight files and the Hugging Face hub: hashing, safe loading, offline help.

Shared by the image encoders and the text encoders. Local files are read as safetensors or with
``torch.load(weights_only=True)``: nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stbench.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")

#: Hub repositories that need an access request before download.
GATED_REPOS = {
    "MahmoodLab/UNI", "MahmoodLab/UNI2-h", "MahmoodLab/CONCH", "MahmoodLab/conchv1_5",
    "paige-ai/Virchow", "paige-ai/Virchow2", "bioptimus/H-optimus-0", "bioptimus/H-optimus-1",
    "prov-gigapath/prov-gigapath", "histai/hibou-L", "kaiko-ai/midnight",
}


_SHA_CACHE: dict[tuple[str, int, int], str] = {}
_SHA_LOCK = threading.Lock()


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, memoised per (path, size, mtime)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    with _SHA_LOCK:
        cached = _SHA_CACHE.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _SHA_LOCK:
        _SHA_CACHE[key] = digest
    return digest


def exc_summary(exc: BaseException, limit: int = 160) -> str:
    """``Type: first line of the message`` (for one-line ConfigErrors)."""
    first = (str(exc).strip().splitlines() or [""])[0][:limit]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set (in the environment or in huggingface_hub)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants

        return bool(getattr(constants, "HF_HUB_OFFLINE", False))
    except ImportError:  # pragma: no cover
        return False


def hub_cached_file(repo_id: str, filename: str) -> str | None:
    """Local path of ``filename`` of ``repo_id`` in the Hugging Face cache, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    try:
        found = try_to_load_from_cache(repo_id, filename)
    except Exception:  # an invalid repo id, for instance
        return None
    return found if isinstance(found, str) and os.path.isfile(found) else None


def hub_help(repo_id: str, option: str = "encoder.weights") -> str:
    """How to obtain the weights of a hub repository."""
    gated = repo_id in GATED_REPOS or repo_id.split("/")[0] in ("MahmoodLab", "paige-ai", "bioptimus")
    text = (
        f"download the weights (`huggingface-cli download {repo_id} --local-dir DIR` on a machine "
        f"with internet) and pass {option}=PATH, or fill the Hugging Face cache and keep "
        f"HF_HUB_OFFLINE=1"
    )
    if gated:
        text += (f"; {repo_id} is gated on Hugging Face (UNI/CONCH and other pathology foundation "
                 f"models): request access at https://huggingface.co/{repo_id} and "
                 f"`huggingface-cli login` first")
    return text


def require_file(path: str | os.PathLike, what: str, fix: str) -> Path:
    """``path`` as a Path; a missing file is a ConfigError."""
    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise ConfigError(f"{what} not found", where=str(p), fix=fix)
    return p


def load_state_dict_file(path: str | os.PathLike) -> dict[str, "torch.Tensor"]:
    """Tensors of a state-dict file (.safetensors, or .pth/.pt/.bin/.ckpt via
    ``torch.load(weights_only=True)``), unwrapped from ``{"state_dict": ...}``/``{"model": ...}``.

    Raises:
        ConfigError: If the file cannot be read or holds no tensors (or needs unpickling of
            arbitrary objects).
    """
    import torch

    p = Path(path)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(p), device="cpu")
        else:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, safetensors errors, truncated file...
        raise ConfigError(
            f"cannot read weights ({exc_summary(exc)})",
            where=str(p),
            fix="pass a state dict saved with torch.save(model.state_dict()) or safetensors",
        ) from exc
    for wrapper in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError("the weights file holds no state dict of tensors", where=str(p),
                          fix="pass a state dict saved with torch.save(model.state_dict())")
    prefixes = ("module.", "model.", "backbone.")
    for prefix in prefixes:
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return dict(obj)


def map_state_dict_in_order(source: dict[str, "torch.Tensor"], model: "torch.nn.Module",
                            where: str = "") -> dict[str, "torch.Tensor"]:
    """Rename ``source``'s tensors to ``model``'s state-dict keys, position by position.

    For checkpoints of the same architecture written by another implementation (e.g. the
    ``efficientnet_lite0`` package's lukemelas-style names onto timm's). Names that already
    match are used as they are.

    Raises:
        ConfigError: If the tensor counts or any shape differ.
    """
    target = model.state_dict()
    if set(source) == set(target):
        pairs = [(k, source[k]) for k in target]
    else:
        if len(source) != len(target):
            raise ConfigError(
                f"weights do not fit the model: {len(source)} tensors in the file, "
                f"{len(target)} in {type(model).__name__}", where=where,
                fix="pass weights of the same architecture")
        pairs = list(zip(target, source.values()))
    for (name, value), (src_name, _) in zip(pairs, source.items()):
        if tuple(value.shape) != tuple(target[name].shape):
            raise ConfigError(
                f"weights do not fit the model: {src_name!r} has shape {tuple(value.shape)}, "
                f"{name!r} needs {tuple(target[name].shape)}", where=where,
                fix="pass weights of the same architecture")
    return {name: value.to(target[name].dtype) for name, value in pairs}
