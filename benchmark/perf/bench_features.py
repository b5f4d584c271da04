"""Feature-extraction throughput and memory on a real her2st section.

Prints a table comparing end-to-end ``encode_slide`` (decode the full-resolution JPEG, crop,
resize, encode) with the bare backbone forward on the same batches already in memory, and the
same end-to-end pass decoding through :func:`read_rgb_torchvision` directly (a cross-check:
``stbench.io.images.read_rgb`` has used this torchvision/libjpeg-turbo decoder for JPEGs since
it was proposed here, so both passes should now agree);
the stage breakdown; and the peak resident memory (``resource.getrusage``) of extraction alone
(child processes, one per decoder) and of the whole run.

    python -m stbench.perf.bench_features                       # C2, efficientnet_lite0
    python -m stbench.perf.bench_features --section C3 --max-spots 64 --repeats 1

Timings are the best of ``--repeats`` interleaved passes, as wall-clock AND process CPU time:
on shared CPUs the wall-clock ratios swing with other processes' load, while CPU time (with
``OMP_WAIT_POLICY=PASSIVE``, so idle OpenMP threads do not spin) measures the work done.
Subsampling spots (``--max-spots``) lowers the end-to-end ratio: the decode is per slide.
The shared data folder is ``$STBENCH_SHARED`` (default ``/work/shared``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from stbench.perf._common import peak_rss_mb, timed as _timed, two_column_table as _table

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: CPU time = work

HER2ST_MPP = 0.69  # ~200 um spot pitch over ~290 px (shared/README.md)


def load_section(shared: Path, section: str, max_spots: int | None = None):
    """A :class:`~stbench.data.Slide` of a her2st section (spots with ``selected == 1``)."""
    import pandas as pd
    from anndata import AnnData

    from stbench.data import FileImage, Slide

    root = shared / "data" / "her2st"
    spots = pd.read_csv(root / "ST-spotfiles" / f"{section}_selection.tsv", sep="\t")
    spots = spots[spots["selected"] == 1].reset_index(drop=True)
    if max_spots:
        spots = spots.iloc[:max_spots]
    images = sorted((root / "ST-imgs" / section[0] / section).glob("*.jpg"))
    if not images:
        raise SystemExit(f"no image for section {section} under {root / 'ST-imgs'}")
    adata = AnnData(np.zeros((len(spots), 1), np.float32))
    adata.obs_names = [f"{x}x{y}" for x, y in zip(spots["x"], spots["y"])]
    adata.obsm["spatial"] = spots[["pixel_x", "pixel_y"]].to_numpy(np.float64)
    adata.obsm["grid"] = spots[["x", "y"]].to_numpy(np.float64)
    return Slide(name=section, patient=section[0], adata=adata, image=FileImage(images[0]),
                 microns_per_pixel=HER2ST_MPP)


def read_rgb_torchvision(path: Path) -> np.ndarray:
    """The torchvision decoder (now ``stbench.io.images.read_rgb``'s JPEG path): JPEGs through
    ``torchvision.io.decode_jpeg`` (libjpeg-turbo into one preallocated tensor; pixel-identical
    to Pillow on the her2st JPEGs), other formats through Pillow."""
    from stbench.io.images import read_rgb

    if Path(path).suffix.lower() not in (".jpg", ".jpeg"):
        return read_rgb(Path(path))
    import warnings

    import torchvision.io as tvio

    try:
        with warnings.catch_warnings():  # torchvision 0.29 flags its image I/O as deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            chw = tvio.decode_jpeg(tvio.read_file(str(path)), mode=tvio.ImageReadMode.RGB)
    except RuntimeError:  # corrupt or unsupported: Pillow decodes or raises DataError
        return read_rgb(Path(path))
    return np.ascontiguousarray(chw.permute(1, 2, 0).numpy())  # HWC memory already: no copy


def _proposed_slide(slide):
    """``slide`` whose image is decoded by :func:`read_rgb_torchvision`."""
    import copy

    from stbench.data import FileImage

    class TorchvisionJpeg(FileImage):
        def read(self) -> np.ndarray:
            return read_rgb_torchvision(self.path)

    fast = copy.copy(slide)
    fast.image = TorchvisionJpeg(slide.image.path)
    return fast


def extract_only(shared: Path, section: str, patch_um: float, out_size: int,
                 decoder: str = "pillow") -> dict:
    """Decode + crop + resize every spot patch; returns timings and peak RSS."""
    from stbench.features.patches import extract_patches, patch_size_px

    slide = load_section(shared, section)
    if decoder == "torchvision":
        import torchvision.io  # noqa: F401 - imported before the baseline RSS

        slide = _proposed_slide(slide)
    base = peak_rss_mb()
    t0 = time.perf_counter()
    image = slide.image.read()
    t1 = time.perf_counter()
    side = patch_size_px(patch_um, slide.microns_per_pixel)
    patches = extract_patches(image, slide.adata.obsm["spatial"], side, out_size)
    t2 = time.perf_counter()
    return {"image_hw": list(image.shape[:2]), "spots": len(patches), "decode_s": t1 - t0,
            "crop_resize_s": t2 - t1, "rss_before_mb": base, "peak_rss_mb": peak_rss_mb()}


def bench(args: argparse.Namespace) -> dict:
    import torch

    from stbench.features.patches import PatchSpec, encode_slide, extract_patches, patch_size_px
    from stbench.plugins import ENCODERS

    shared = Path(args.shared)
    slide = load_section(shared, args.section, args.max_spots)
    t = time.perf_counter()
    encoder = ENCODERS.get(args.encoder)(batch_size=args.batch_size, device=args.device)
    load_s = time.perf_counter() - t
    spec = PatchSpec(patch_um=args.patch_um, batch_size=args.batch_size)
    size = encoder.input_size
    n = slide.n_spots
    with torch.inference_mode():  # warm-up: first-call kernel selection is not throughput
        encoder.encode(np.zeros((min(args.batch_size, n), size, size, 3), np.uint8))
    rss_model = peak_rss_mb()

    # in-memory batches: the very patches encode_slide cuts
    image = slide.image.read()
    side = patch_size_px(spec.patch_um, slide.microns_per_pixel)
    centres = np.asarray(slide.adata.obsm["spatial"], np.float64)
    batches = [extract_patches(image, centres[i:i + spec.batch_size], side, size)
               for i in range(0, n, spec.batch_size)]
    del image
    tensors = [encoder.preprocess(b) for b in batches] if hasattr(encoder, "preprocess") else None

    fast_slide = _proposed_slide(slide)

    def forward_all() -> None:
        with torch.inference_mode():
            for x in tensors or []:
                encoder._forward(x)
            if getattr(encoder, "device", None) is not None and encoder.device.type == "cuda":
                torch.cuda.synchronize()

    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in ("e2e", "e2e_tv", "mem", "fwd")}
    for _ in range(args.repeats):  # interleaved, so contention hits every variant alike
        feats, *t = _timed(lambda: encode_slide(slide, encoder, spec))
        runs["e2e"].append(tuple(t))
        feats_fast, *t = _timed(lambda: encode_slide(fast_slide, encoder, spec))
        runs["e2e_tv"].append(tuple(t))
        mem, *t = _timed(lambda: np.concatenate([encoder.encode(b) for b in batches]))
        runs["mem"].append(tuple(t))
        if tensors is not None:
            _, *t = _timed(forward_all)
            runs["fwd"].append(tuple(t))
    if not runs["fwd"]:
        runs["fwd"] = runs["mem"]
    assert np.allclose(feats, mem, atol=1e-4), "encode_slide and in-memory features differ"
    assert np.array_equal(feats, feats_fast), "the proposed decoder changes the features"

    # stage breakdown of one end-to-end pass
    _, decode_tv_s, decode_tv_cpu = _timed(fast_slide.image.read)
    image, decode_s, decode_cpu = _timed(slide.image.read)
    _, crop_s, crop_cpu = _timed(lambda: [extract_patches(image, centres[i:i + spec.batch_size], side, size)
                                          for i in range(0, n, spec.batch_size)])
    del image

    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in runs.items()}
    res = {
        "section": args.section, "spots": n, "encoder": args.encoder,
        "device": str(getattr(encoder, "device", "cpu")), "threads": torch.get_num_threads(),
        "batch_size": args.batch_size, "input_size": size, "patch_px": side, "load_s": load_s,
        "repeats": args.repeats, "loadavg": list(os.getloadavg()),
        "decode_s": decode_s, "decode_cpu_s": decode_cpu, "decode_torchvision_s": decode_tv_s,
        "decode_torchvision_cpu_s": decode_tv_cpu, "crop_resize_s": crop_s, "crop_resize_cpu_s": crop_cpu,
        "rss_after_model_mb": rss_model, "peak_rss_mb": peak_rss_mb(),
    }
    for key, (wall, cpu) in best.items():
        res[f"{key}_wall_s"], res[f"{key}_cpu_s"] = wall, cpu
        res[f"{key}_spots_per_s"] = n / wall
    for key in ("e2e", "e2e_tv", "mem"):
        res[f"ratio_{key}_over_fwd_wall"] = best["fwd"][0] / best[key][0]
        res[f"ratio_{key}_over_fwd_cpu"] = best["fwd"][1] / best[key][1]
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=os.environ.get("STBENCH_SHARED", "/work/shared"))
    parser.add_argument("--section", default="C2")
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--patch-um", type=float, default=112.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-spots", type=int, default=None, help="subsample the first N spots")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--extract-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--decoder", default="pillow", help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    if args.extract_only:  # child process: extraction memory without torch in the address space
        print(json.dumps(extract_only(Path(args.shared), args.section, args.patch_um, 224, args.decoder)))
        return 0

    ext = {}
    for decoder in ("pillow", "torchvision"):  # child processes: one decode each, fresh RSS
        child = subprocess.run([sys.executable, "-m", "stbench.perf.bench_features", "--extract-only",
                                "--decoder", decoder, "--shared", args.shared, "--section", args.section,
                                "--patch-um", str(args.patch_um)],
                               capture_output=True, text=True, check=True)
        ext[decoder] = json.loads(child.stdout.strip().splitlines()[-1])
    res = bench(args)
    res["extraction"] = ext
    pil, tv = ext["pillow"], ext["torchvision"]
    r = res

    def line(key: str) -> str:
        return (f"{r[key + '_spots_per_s']:.2f} spots/s (wall {r[key + '_wall_s']:.2f} s, "
                f"CPU {r[key + '_cpu_s']:.2f} s)")

    def ratio(key: str) -> str:
        return f"{r[f'ratio_{key}_over_fwd_wall']:.3f} wall, {r[f'ratio_{key}_over_fwd_cpu']:.3f} CPU time"

    rows = [
        ("load average (1, 5, 15 min)", "%.1f, %.1f, %.1f on %d CPUs" % (*r["loadavg"], os.cpu_count() or 0)),
        ("section / spots", f"{r['section']} / {r['spots']} spots, image {pil['image_hw'][1]} x "
                            f"{pil['image_hw'][0]} px"),
        ("encoder", f"{r['encoder']} on {r['device']} ({r['threads']} threads), batch {r['batch_size']}, "
                    f"patch {r['patch_px']} px -> {r['input_size']} px, best of {r['repeats']}"),
        ("end-to-end encode_slide (Pillow decode)", line("e2e")),
        ("end-to-end, torchvision decode (proposed)", line("e2e_tv")),
        ("encode() on in-memory patches", line("mem")),
        ("bare backbone forward", line("fwd")),
        ("ratio e2e / bare forward (target >= 0.8)", ratio("e2e")),
        ("ratio e2e (proposed) / bare forward", ratio("e2e_tv")),
        ("ratio encode() in memory / bare forward", ratio("mem")),
        ("stage: decode JPEG, Pillow", f"wall {r['decode_s']:.2f} s, CPU {r['decode_cpu_s']:.2f} s"),
        ("stage: decode JPEG, torchvision", f"wall {r['decode_torchvision_s']:.2f} s, "
                                            f"CPU {r['decode_torchvision_cpu_s']:.2f} s"),
        ("stage: crop + resize (all spots)", f"wall {r['crop_resize_s']:.3f} s, CPU {r['crop_resize_cpu_s']:.3f} s"),
        ("peak RSS, extraction, Pillow", f"{pil['peak_rss_mb']:.0f} MiB (before decode "
                                         f"{pil['rss_before_mb']:.0f} MiB; target < 3072)"),
        ("peak RSS, extraction, torchvision", f"{tv['peak_rss_mb']:.0f} MiB (before decode "
                                              f"{tv['rss_before_mb']:.0f} MiB, torch imported)"),
        ("peak RSS, whole benchmark", f"{r['peak_rss_mb']:.0f} MiB (after model load and warm-up "
                                      f"{r['rss_after_model_mb']:.0f} MiB)"),
    ]
    print(_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
