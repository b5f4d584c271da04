"""Neural text encoders: MiniLM equals sentence-transformers; token states; missing or
offline models are fast ConfigErrors; the OpenCLIP text tower."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

torch = pytest.importorskip("torch")

from stbench.errors import ConfigError  # noqa: E402
from stbench.features.text_encoders import (  # noqa: E402
    HFTextEncoder,
    MiniLMTextEncoder,
    OpenClipTextEncoder,
    build_neural_gene_text,
    make_text_encoder,
    minilm_path,
)

TEXTS = [
    "ERBB2: receptor tyrosine kinase amplified in HER2-positive breast cancer.",
    "KRT5: keratin 5, a basal epithelial intermediate filament.",
    "CD74: MHC class II invariant chain expressed by antigen-presenting immune cells.",
]


@pytest.fixture(scope="module")
def minilm() -> MiniLMTextEncoder:
    return MiniLMTextEncoder(device="cpu")


def test_minilm_matches_sentence_transformers(minilm):
    from sentence_transformers import SentenceTransformer

    ours = minilm.embed(TEXTS)
    ref = SentenceTransformer(str(minilm_path()), device="cpu").encode(TEXTS, convert_to_numpy=True)
    assert ours.shape == (3, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert minilm.embed([]).shape == (0, 384)
    with pytest.raises(TypeError):
        minilm.embed("one string")


def test_minilm_token_states(minilm):
    states, mask = minilm.token_states(TEXTS, max_length=128)
    assert states.dtype == np.float32 and mask.dtype == bool
    assert states.shape[:2] == mask.shape and states.shape[2] == 384
    assert mask[:, 0].all() and (mask.sum(1) > 5).all()
    assert not states[~mask].any()  # padding is zero
    pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(pooled, minilm.embed(TEXTS), atol=2e-5)
    short, short_mask = minilm.token_states(TEXTS, max_length=8)
    assert short.shape == (3, 8, 384) and short_mask.all()
    d = minilm.digest()
    assert len(d) == 16 and d == minilm.digest()


def test_hf_encoder_local_folder_and_missing_models(minilm, tmp_path, monkeypatch):
    hf = HFTextEncoder(str(minilm_path()), device="cpu", max_length=256)
    np.testing.assert_allclose(hf.embed(TEXTS[:2]), minilm.embed(TEXTS[:2]), atol=1e-6)
    cls = HFTextEncoder(str(minilm_path()), pooling="cls", normalize=False, device="cpu")
    assert cls.embed(TEXTS[:1]).shape == (1, 384) and cls.digest() != hf.digest()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="not found"):
        HFTextEncoder(str(tmp_path / "no-such-model"))
    start = time.perf_counter()
    for name in ("biobert", "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract-fulltext"):
        with pytest.raises(ConfigError, match="huggingface-cli download"):
            HFTextEncoder(name)
    assert time.perf_counter() - start < 3.0
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="config.json"):
        HFTextEncoder(str(tmp_path / "empty"))


def test_local_digest_equals_the_loaded_encoders_without_loading_it(minilm, tmp_path):
    import shutil

    assert MiniLMTextEncoder.local_digest() == minilm.digest()
    for kwargs in ({}, {"pooling": "cls", "normalize": False}, {"max_length": 64}):
        loaded = HFTextEncoder(str(minilm_path()), device="cpu", **kwargs)
        assert HFTextEncoder.local_digest(str(minilm_path()), **kwargs) == loaded.digest()
    # a folder whose tokenizer config names no model_max_length: truncation = max_length
    copy = tmp_path / "model"
    shutil.copytree(minilm_path(), copy, ignore=shutil.ignore_patterns(".cache"))
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config.pop("model_max_length", None)
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    loaded = HFTextEncoder(str(copy), device="cpu", max_length=300)
    assert HFTextEncoder.local_digest(str(copy), max_length=300) == loaded.digest()
    assert HFTextEncoder.local_digest(str(tmp_path / "absent")) is None


def test_a_warm_cache_run_never_loads_the_text_model(tmp_path, monkeypatch):
    from stbench.features import text_encoders
    from stbench.features.cache import ArrayCache
    from stbench.features.representations import RepresentationOptions, make_representation

    genes = ["ERBB2", "KRT5", "CD74"]
    cache = ArrayCache(tmp_path / "cache")
    cold = make_representation("minilm", RepresentationOptions(cache=cache)).build(genes)
    pooled, (states, _) = cold.embed(genes), cold.token_states(genes)

    def no_model(*args, **kwargs):
        raise AssertionError("the text model was loaded although the cache is warm")

    monkeypatch.setattr(text_encoders.HFTextEncoder, "__init__", no_model)
    warm_rep = make_representation("minilm", RepresentationOptions(cache=cache))
    warm = warm_rep.build(genes)
    np.testing.assert_array_equal(warm.embed(genes), pooled)
    np.testing.assert_array_equal(warm.token_states(genes)[0], states)
    assert len(warm_rep.digest()) == 16


def test_make_text_encoder_and_gene_text(minilm):
    with pytest.raises(ConfigError, match="unknown text encoder"):
        make_text_encoder("word2vec")
    with pytest.raises(ConfigError, match="bad options"):
        make_text_encoder("minilm", nonsense=1)
    gt = build_neural_gene_text({"ERBB2": TEXTS[0], "KRT5": TEXTS[1], "CD74": TEXTS[2]}, minilm)
    emb = gt.embed(["CD74", "ERBB2"])
    np.testing.assert_allclose(emb, minilm.embed([TEXTS[2], TEXTS[0]]), atol=1e-6)
    states, mask = gt.token_states(["KRT5"])
    assert states.shape[0] == 1 and mask.all() and states.shape[1] == mask.shape[1]


def test_open_clip_text_tower(tmp_path, monkeypatch):
    import open_clip

    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
           "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    torch.manual_seed(0)
    (tmp_path / "stbench-tiny-text.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(str(tmp_path / "stbench-tiny-text.json"))
    net = open_clip.create_model("stbench-tiny-text", pretrained=None, pretrained_text=False).eval()
    folder = tmp_path / "clip"
    folder.mkdir()
    torch.save(net.state_dict(), folder / "open_clip_pytorch_model.bin")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))

    enc = make_text_encoder("open_clip", model=f"local-dir:{folder}", device="cpu")
    emb = enc.embed(TEXTS)
    tok = open_clip.get_tokenizer("stbench-tiny-text")(TEXTS)
    with torch.inference_mode():
        ref = net.encode_text(tok, normalize=True).numpy()
    assert emb.shape == (3, 16)
    np.testing.assert_allclose(emb, ref, atol=1e-5)
    states, mask = enc.token_states(TEXTS)
    n_tokens = (tok != 0).sum(1).numpy()
    assert states.shape == (3, int(n_tokens.max()), 32)
    assert mask.sum(1).tolist() == n_tokens.tolist()
    assert len(enc.digest()) == 16
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError):
        OpenClipTextEncoder(model="ViT-B-32", pretrained="laion2b_s34b_b79k")
