"""Pretrained image encoders: real weights classify real photographs; local loading
round-trips; missing or offline weights are clear ConfigErrors (fast)."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

torch = pytest.importorskip("torch")

from stbench.features.weights import load_state_dict_file, map_state_dict_in_order  # noqa: E402
from stbench.features.image_encoders import (  # noqa: E402
    EfficientNetLite0Encoder,
    OpenClipEncoder,
    TimmEncoder,
)
from stbench.errors import ConfigError  # noqa: E402


def _square(image: np.ndarray, size: int = 224) -> np.ndarray:
    from PIL import Image

    h, w = image.shape[:2]
    s = min(h, w)
    crop = image[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BICUBIC))


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLite0Encoder:
    return EfficientNetLite0Encoder(batch_size=4, device="cpu")


def test_efficientnet_lite0_classifies_real_photographs(lite0):
    from skimage import data

    images = np.stack([_square(data.chelsea()), _square(data.coffee())])
    top5 = np.argsort(-lite0.classify(images), axis=1)[:, :5]
    assert 281 <= top5[0, 0] <= 285, top5[0]  # tabby/tiger/Persian/Siamese/Egyptian cat
    assert top5[1, 0] in (967, 968, 504), top5[1]  # espresso / cup / coffee mug


def test_lite0_features_are_batch_invariant_and_resized(lite0):
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 255, (3, 40, 40, 3), dtype=np.uint8)  # resized to 224 in batch
    a = lite0.encode(patches)
    lite0.batch_size, old = 2, lite0.batch_size
    try:
        b = lite0.encode(patches)
    finally:
        lite0.batch_size = old
    assert a.shape == (3, 1280) and a.dtype == np.float32
    assert np.isfinite(a).all() and (a >= 0).all()  # pooled ReLU6 activations
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert lite0.encode(np.zeros((0, 40, 40, 3), np.uint8)).shape == (0, 1280)
    with pytest.raises(ValueError):
        lite0.encode(np.zeros((2, 40, 40, 3), np.float32))


def test_lite0_digest_hashes_weights(lite0, tmp_path):
    d = lite0.digest()
    assert len(d) == 16 and d == lite0.digest()
    state = load_state_dict_file(lite0.weights_path)
    first = next(iter(state))
    state[first] = state[first] + 1.0
    path = tmp_path / "lite0-changed.pth"
    torch.save(state, path)
    other = EfficientNetLite0Encoder(weights=str(path), device="cpu")
    assert other.digest() != d
    with pytest.raises(ConfigError, match="not found"):
        EfficientNetLite0Encoder(weights=str(tmp_path / "nope.pth"))


def test_in_order_mapping_checks_count_and_shape():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    src = {"a.w": torch.zeros(4, 3), "a.b": torch.zeros(4), "b.w": torch.ones(2, 4), "b.b": torch.ones(2)}
    mapped = map_state_dict_in_order(src, net)
    assert list(mapped) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert torch.equal(mapped["1.weight"], torch.ones(2, 4))
    with pytest.raises(ConfigError, match="3 tensors"):
        map_state_dict_in_order(dict(list(src.items())[:3]), net)
    with pytest.raises(ConfigError, match="shape"):
        map_state_dict_in_order({**src, "b.w": torch.zeros(2, 5)}, net)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": ConfigError("x")}, path)
    with pytest.raises(ConfigError, match="cannot read weights"):
        load_state_dict_file(path)


def test_timm_local_state_dict_round_trips(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=1000).eval()
    pth, st = tmp_path / "resnet18.pth", tmp_path / "resnet18.safetensors"
    torch.save(net.state_dict(), pth)
    save_file(net.state_dict(), str(st))
    enc = TimmEncoder(model="resnet18", weights=str(pth), input_size=64, batch_size=3, device="cpu")
    assert enc.dim == 512 and enc.input_size == 64
    patches = np.random.default_rng(1).integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
    feats = enc.encode(patches)
    with torch.inference_mode():
        x = enc.preprocess(patches).contiguous()
        ref = net.forward_head(net.forward_features(x), pre_logits=True).numpy()
    np.testing.assert_allclose(feats, ref, rtol=1e-4, atol=1e-5)
    # the safetensors copy loads the very same tensors (the classifier head is dropped)
    enc_st = TimmEncoder(model="resnet18", weights=str(st), input_size=64, device="cpu")
    own = enc_st.model.state_dict()
    assert "fc.weight" not in own
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in own.items())
    assert enc.digest() != enc_st.digest() and len(enc.digest()) == 16
    with pytest.raises(ConfigError, match="do not fit"):
        TimmEncoder(model="resnet10t", weights=str(pth), device="cpu")
    with pytest.raises(ConfigError, match="unknown timm model"):
        TimmEncoder(model="resnet_nope", weights=str(pth), device="cpu")


def test_timm_missing_file_and_offline_hub_fail_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="not found"):
        TimmEncoder(model="resnet18", weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigError, match="needs pretrained weights"):
        TimmEncoder(model="resnet18")
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        TimmEncoder(hub="hf-hub:MahmoodLab/UNI")
    assert time.perf_counter() - start < 3.0
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message and "encoder.weights=PATH" in message
    assert "gated" in message and "request access" in message


def _tiny_open_clip(tmp_path):
    import open_clip

    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    name = "stbench-tiny-clip"
    (tmp_path / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(str(tmp_path / f"{name}.json"))
    torch.manual_seed(0)
    net = open_clip.create_model(name, pretrained=None, pretrained_text=False).eval()
    folder = tmp_path / "local"
    folder.mkdir()
    torch.save(net.state_dict(), folder / "open_clip_pytorch_model.bin")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    return name, net, folder


def test_open_clip_loads_local_weights(tmp_path):
    name, net, folder = _tiny_open_clip(tmp_path)
    patches = np.random.default_rng(2).integers(0, 255, (3, 48, 48, 3), dtype=np.uint8)
    by_path = OpenClipEncoder(model=name, pretrained=str(folder / "open_clip_pytorch_model.bin"),
                              device="cpu")
    by_dir = OpenClipEncoder(model=f"local-dir:{folder}", device="cpu")
    assert by_path.dim == by_dir.dim == 16 and by_path.input_size == 32
    with torch.inference_mode():
        ref = net.encode_image(by_path.preprocess(patches).contiguous()).numpy()
    np.testing.assert_allclose(by_path.encode(patches), ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(by_dir.encode(patches), ref, rtol=1e-4, atol=1e-5)


def test_open_clip_missing_and_offline_fail_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="not found"):
        OpenClipEncoder(model="ViT-B-32", pretrained=str(tmp_path / "clip.bin"))
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="not cached"):
        OpenClipEncoder(model="ViT-B-32", pretrained="laion2b_s34b_b79k")
    with pytest.raises(ConfigError, match="Hugging Face cache"):
        OpenClipEncoder(model="hf-hub:MahmoodLab/CONCH")
    assert time.perf_counter() - start < 3.0
    with pytest.raises(ConfigError, match="unknown OpenCLIP tag"):
        OpenClipEncoder(model="ViT-B-32", pretrained="no_such_tag")


def test_encoders_are_registered_with_hydra_configs():
    from stbench.run.config import compose
    from stbench.plugins import ENCODERS

    assert ENCODERS.get("efficientnet_lite0") is EfficientNetLite0Encoder
    assert ENCODERS.get("timm") is TimmEncoder and ENCODERS.get("open_clip") is OpenClipEncoder
    cfg = compose(["encoder=timm", "encoder.model=resnet18", "encoder.weights=/x.pth",
                   "encoder.mean=[0.5,0.5,0.5]", "+encoder.kwargs.drop_rate=0.1"])
    assert cfg.encoder.name == "timm" and list(cfg.encoder.mean) == [0.5, 0.5, 0.5]
    cfg = compose(["encoder=efficientnet_lite0", "encoder.batch_size=8"])
    assert cfg.encoder.batch_size == 8 and cfg.encoder.input_size == 224


def test_building_an_encoder_keeps_the_pinned_thread_count():
    """``threads=1`` of a run must survive the encoder's own thread set-up."""
    import torch

    from stbench.run.compute import configure_threads, pin_threads

    before = torch.get_num_threads()
    try:
        pin_threads(1)
        configure_threads()  # what every TorchImageEncoder does when built
        assert torch.get_num_threads() == 1
        pin_threads(None)
        configure_threads()
        from stbench.run.compute import machine_threads

        assert torch.get_num_threads() == machine_threads()
    finally:
        pin_threads(None)
        torch.set_num_threads(before)
