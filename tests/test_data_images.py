"""``data=images``: any folder of PNG/JPEG images (odd sizes, grey, RGBA), no labels, pixel metrics only."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose
from PIL import Image

from vcm.data.datamodule import DetectionDataModule
from vcm.errors import DataError


def _pixels(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth, image-like content (a gradient plus a little noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255.0 / w, yy * 255.0 / h, (xx + yy) * 127.0 / (h + w)], axis=-1)
    return np.clip(base + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture()
def folder(tmp_path) -> Path:
    """Four images: odd-sized RGB PNG, grey PNG, RGBA PNG and an RGB JPEG in a sub-folder."""
    root = tmp_path / "my_images"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(_pixels(97, 131, 0)).save(root / "odd.png")
    Image.fromarray(_pixels(80, 133, 1)[..., 0], mode="L").save(root / "grey.png")
    rgba = np.concatenate([_pixels(70, 77, 2), np.full((70, 77, 1), 100, np.uint8)], axis=-1)
    Image.fromarray(rgba, mode="RGBA").save(root / "alpha.png")
    Image.fromarray(_pixels(103, 165, 3)).save(root / "sub" / "photo.JPG", quality=95)
    (root / "notes.txt").write_text("not an image, not listed")
    return root


def _datamodule(root: Path, **kwargs) -> DetectionDataModule:
    dm = DetectionDataModule(source="images", root=str(root), **{"split_fractions": (0, 0, 1), "crop_size": None, **kwargs})
    dm.setup()
    return dm


def test_images_are_read_as_rgb_at_their_size(folder):
    dm = _datamodule(folder)
    assert dm.name == "my_images" and not dm.has_labels
    test = dm.datasets["test"]
    assert len(dm.datasets["train"]) == 0 and len(dm.datasets["val"]) == 0
    samples = {t["name"]: (im, t) for im, t in (test[i] for i in range(len(test)))}
    assert sorted(samples) == ["alpha", "grey", "odd", "sub/photo"]
    sizes = {n: tuple(im.shape) for n, (im, _) in samples.items()}
    assert sizes == {"alpha": (3, 70, 77), "grey": (3, 80, 133), "odd": (3, 97, 131), "sub/photo": (3, 103, 165)}
    assert all(im.dtype == torch.uint8 for im, _ in samples.values())
    grey = samples["grey"][0]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[0], torch.from_numpy(_pixels(80, 133, 1)[..., 0]))
    assert torch.equal(samples["alpha"][0], torch.from_numpy(_pixels(70, 77, 2)).permute(2, 0, 1))
    assert all(t["boxes"].shape == (0, 4) for _, t in samples.values())


def test_corrupt_file_is_named(folder):
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG")
    with pytest.raises(DataError, match=r"cannot read image .*broken.png"):
        _datamodule(folder)
    # a file whose header reads but whose data is cut short fails when it is decoded, named
    (folder / "broken.png").unlink()
    whole = (folder / "odd.png").read_bytes()
    (folder / "odd.png").write_bytes(whole[: len(whole) // 2])
    dm = _datamodule(folder)
    names = [n for n in dm.datasets["test"].names]
    with pytest.raises(DataError, match=r"cannot read image .*odd.png"):
        dm.datasets["test"][names.index("odd")]


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(DataError, match=r"no PNG/JPEG image in"):
        _datamodule(tmp_path)
    with pytest.raises(DataError, match=r"is not a folder; expected a folder of PNG/JPEG images"):
        _datamodule(tmp_path / "nope")


def test_training_split_and_crops(folder):
    kw = {"split_fractions": (0.5, 0.25, 0.25), "batch_size": 2, "num_workers": 0}
    dm = _datamodule(folder, crop_size=(64, 64), **kw)
    assert dm.split_record["method"] == "seeded" and dm.split_record["unit"] == "image"
    assert sorted(dm.split_record["train"] + dm.split_record["val"] + dm.split_record["test"]) == \
        ["alpha", "grey", "odd", "sub/photo"]
    assert dm.split_record == _datamodule(folder, crop_size=(64, 64), **kw).split_record  # seeded
    images, targets = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 64, 64) and len(targets) == 2
    # every training image must hold a crop: the smaller ones are named
    with pytest.raises(DataError, match=r"data.crop_size=\[96, 96\] is larger than .*training image"):
        _datamodule(folder, crop_size=(96, 96), split_fractions=(1, 0, 0))
    # the evaluation default leaves nothing to train on, and says how to change it
    with pytest.raises(DataError, match=r"train split of my_images is empty.*data.split_fractions=\[0.8,0.1,0.1\]"):
        _datamodule(folder).train_dataloader()


@pytest.mark.parametrize("split", ["test", "all"])
def test_vcm_eval_jpeg_on_a_folder(folder, tmp_path, split):
    from vcm.cli.eval import evaluate

    cfg = compose(["data=images", f"data.root={folder}", "codec=jpeg", f"split={split}"], tmp_path, name="eval")
    _, record = evaluate(cfg)
    assert record["dataset"] == "my_images" and record["num_images"] == 4 and record["detector"] is None
    assert {"bpp_real", "psnr", "ms_ssim"} <= set(record["metrics"])
    assert not any(k.startswith(("roi", "bg_", "map", "kitti")) for k in record["metrics"])
    assert sorted(p["name"] for p in record["per_image"]) == ["alpha", "grey", "odd", "sub/photo"]
    for p in record["per_image"]:
        assert p["bpp_real"] == pytest.approx(p["bits"] / (p["height"] * p["width"])) and p["psnr"] > 25


def test_vcm_eval_refuses_a_detector_without_labels(folder, tmp_path):
    from vcm.cli.eval import evaluate
    from vcm.errors import ConfigError

    cfg = compose(["data=images", f"data.root={folder}", "codec=jpeg", "detector=resnet18_fpn"], tmp_path, name="eval")
    with pytest.raises(ConfigError, match=r"my_images has no labels .*detection cannot be measured"):
        evaluate(cfg)
