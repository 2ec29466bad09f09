"""``make bench-portability``: do encoder and decoder pick the same entropy tables on other CPUs?

For every kitti_mini frame and every zoo hyperprior, this process encodes the frame's hyper-latent
``z_hat`` (decoded, as the decoder sees it). Child processes under other CPU kernels
(``ONEDNN_MAX_CPU_ISA`` = SSE41 / AVX2, ``ATEN_CPU_CAPABILITY`` = default / avx2) compute the Gaussian
table indexes from the same ``z_hat``, once with CompressAI's float ``h_s`` (what format-1 files used)
and once with vcm's exact fixed-point evaluation (:mod:`vcm.codecs.exact`, format 2), and the counts
of indexes that differ from this process's are printed per setting. Then the coding time of the
float and the exact path, side by side on the same frames.

    python -m vcm.cli.bench_portability [--frames N] [--models q1,q3,...] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from vcm.codecs.base import build_indexes, pad_image
from vcm.codecs.exact import exact_forward

SETTINGS = {
    "ONEDNN_MAX_CPU_ISA=SSE41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "ONEDNN_MAX_CPU_ISA=AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"},
    "ATEN_CPU_CAPABILITY=avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
}
MODELS = ("hyperprior-kitti-q1", "hyperprior-kitti-q3", "hyperprior-kitti-q4", "hyperprior-kitti-q5")


def _indexes(model, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(float-path indexes, exact-path indexes) of one hyper-latent."""
    gc = model.gaussian_conditional
    with torch.no_grad():
        return build_indexes(gc, model.h_s(z_hat)), build_indexes(gc, exact_forward(model.h_s, z_hat, "h_s"))


def _child(work: Path) -> None:
    from vcm.codecs.checkpoint import load_codec_checkpoint

    torch.set_num_threads(1)
    latents = torch.load(work / "latents.pt")
    out = {}
    for name in sorted({k.split("/")[0] for k in latents}):
        model, _ = load_codec_checkpoint(f"zoo:{name}")
        for key in (k for k in latents if k.startswith(name + "/")):
            out[key] = _indexes(model, latents[key])
    torch.save(out, work / f"indexes-{os.getpid()}.pt")
    print(work / f"indexes-{os.getpid()}.pt")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vcm.cli.bench_portability", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[2].parent / "shared" / "data" / "kitti_mini"))
    p.add_argument("--frames", type=int, default=0, help="first N frames only (0: all)")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--timing-frames", type=int, default=5)
    p.add_argument("--timing-only", action="store_true", help="only the float vs exact coding time, bytes and PSNR")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        _child(Path(a.child))
        return 0
    from vcm.codecs.checkpoint import load_codec_checkpoint
    from vcm.data.kitti import load_image

    torch.set_num_threads(1)
    frames = sorted((Path(a.root) / "training" / "image_2").glob("*.png"))
    if a.frames:
        frames = frames[: a.frames]
    if not frames:
        print(f"bench-portability: error: no frames under {a.root}/training/image_2", file=sys.stderr)
        return 2
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    if a.timing_only:
        for name in models:
            _timing(name, frames[: a.timing_frames])
        return 0
    latents, here, n_latents = {}, {}, 0
    t0 = time.perf_counter()
    for name in models:
        model, _ = load_codec_checkpoint(f"zoo:{name}")
        for f in frames:
            x, _ = pad_image(load_image(f).float()[None] / 255, model.min_div)
            with torch.no_grad():
                z = model.h_a(torch.abs(model.g_a(x)))
                z_hat = model.entropy_bottleneck.decompress(model.entropy_bottleneck.compress(z), z.shape[-2:])
            key = f"{name}/{f.stem}"
            latents[key] = z_hat
            here[key] = _indexes(model, z_hat)
            n_latents += here[key][0].numel()
    print(f"{len(frames)} frames x {len(models)} models = {len(latents)} frame-models, {n_latents / 1e6:.1f} M latents "
          f"({time.perf_counter() - t0:.0f} s)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch.save(latents, work / "latents.pt")
        for label, env in SETTINGS.items():
            done = subprocess.run([sys.executable, "-m", "vcm.cli.bench_portability", "--child", str(work)], check=False,
                                  env={**os.environ, **env}, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"bench-portability: error: the child under {label} failed: {done.stderr[-2000:]}", file=sys.stderr)
                return 1
            there = torch.load(done.stdout.strip().splitlines()[-1])
            flips = {"float": [0, 0], "exact": [0, 0]}
            for key, (f_here, e_here) in here.items():
                f_there, e_there = there[key]
                for path, (u, v) in (("float", (f_here, f_there)), ("exact", (e_here, e_there))):
                    n = int((u != v).sum())
                    flips[path][0] += n
                    flips[path][1] += int(n > 0)
            rows.append({"setting": label, "float_flips": flips["float"][0], "float_pairs": flips["float"][1],
                         "exact_flips": flips["exact"][0], "exact_pairs": flips["exact"][1]})
    print("\n| kernel setting | float h_s: index flips | frame-models with flips | exact h_s: index flips | frame-models with flips |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['setting']} | {r['float_flips']} | {r['float_pairs']} / {len(latents)} | {r['exact_flips']} | "
              f"{r['exact_pairs']} / {len(latents)} |")
    _timing(models[len(models) // 2], frames[: a.timing_frames])
    print(json.dumps(rows))
    return 0


def _timing(name: str, frames: list[Path]) -> None:
    """Encode and decode time, strings' bytes and PSNR of CompressAI's float path and vcm's exact one
    (the whole path of a file: container, symbols check, guarded range decoder), interleaved."""
    from compressai.models import ScaleHyperprior

    from vcm.codecs.base import crop_image
    from vcm.codecs.checkpoint import load_codec_checkpoint
    from vcm.codecs.container import decode_image, encode_image, unpack
    from vcm.data.kitti import load_image
    from vcm.evaluation.runners import to_uint8
    from vcm.metrics.image import psnr

    model, _ = load_codec_checkpoint(f"zoo:{name}")
    stats = {k: 0.0 for k in ("float_enc", "exact_enc", "float_dec", "exact_dec", "float_bytes", "exact_bytes",
                              "float_psnr", "exact_psnr")}
    with torch.no_grad():
        for f in frames:
            image = load_image(f)
            x, pad = pad_image(image.float()[None] / 255, model.min_div)
            # float: CompressAI's own compress / decompress; exact: vcm's whole path (container, exact
            # parameters, symbols check, guarded range decoder, crop)
            t = time.perf_counter()
            out = ScaleHyperprior.compress(model, x)
            stats["float_enc"] += time.perf_counter() - t
            t = time.perf_counter()
            x_hat = crop_image(ScaleHyperprior.decompress(model, out["strings"], out["shape"])["x_hat"], pad)
            stats["float_dec"] += time.perf_counter() - t
            stats["float_bytes"] += sum(len(s[0]) for s in out["strings"])
            stats["float_psnr"] += float(psnr(to_uint8(x_hat), image))
            t = time.perf_counter()
            data = encode_image(model, image)
            stats["exact_enc"] += time.perf_counter() - t
            t = time.perf_counter()
            x_hat = decode_image(model, data)
            stats["exact_dec"] += time.perf_counter() - t
            stats["exact_bytes"] += sum(len(s[0]) for s in unpack(data).strings)
            stats["exact_psnr"] += float(psnr(to_uint8(x_hat), image))
    n = len(frames)
    m = {k: v / n for k, v in stats.items()}
    print(f"\n{name}, {n} frames, one thread: encode {m['float_enc']:.3f} s (float) vs {m['exact_enc']:.3f} s "
          f"(exact) = {m['exact_enc'] / m['float_enc']:.3f}x; decode {m['float_dec']:.3f} s vs {m['exact_dec']:.3f} s = "
          f"{m['exact_dec'] / m['float_dec']:.3f}x; strings {m['float_bytes']:.1f} vs {m['exact_bytes']:.1f} bytes; "
          f"PSNR {m['float_psnr']:.3f} vs {m['exact_psnr']:.3f} dB")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
