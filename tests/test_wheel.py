"""vcm as a user installs it: a wheel built from the checkout, installed into a fresh virtual
environment, runs vcm-eval and codes a frame by zoo name from a folder outside the checkout, with the
zoo's weights fetched from an HTTP server on 127.0.0.1 (the wheel holds none)."""
from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import zipfile
from pathlib import Path

import pytest

from vcm import zoo

ROOT = Path(__file__).resolve().parents[1]
MODEL = "hyperprior-kitti-q3"
MAX_WHEEL_BYTES = 2_000_000


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def _run(argv: list, cwd: Path, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                            check=False)
    assert result.returncode == 0, f"{argv[0]} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
@pytest.mark.guard
@pytest.mark.timeout(600)
def test_an_installed_wheel_evaluates_and_codes_by_zoo_name_outside_the_checkout(tmp_path, kitti_tiny_root):
    # The wheel: configs and registry inside, no weights, small.
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", dist, ROOT],
         cwd=tmp_path, env=dict(os.environ))
    (wheel,) = dist.glob("vcm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert wheel.stat().st_size < MAX_WHEEL_BYTES, f"{wheel.name}: {wheel.stat().st_size} bytes"
    assert "vcm/zoo/registry.json" in names and "vcm/conf/eval.yaml" in names and "vcm/conf/train.yaml" in names
    assert "vcm/conf/data/splits/kitti_mini/test.txt" in names
    assert not [n for n in names if n.endswith((".pt", ".ckpt"))], "the wheel holds weights"

    # A fresh environment: the project's dependencies visible (no network), vcm only from the wheel. A
    # .pth line adds the project venv's site-packages as a plain folder, so its editable vcm stays out.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", venv], cwd=tmp_path, env=dict(os.environ))
    python = venv / "bin" / "python"
    site = Path(subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    (site / "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", wheel], cwd=tmp_path, env=dict(os.environ))

    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VCM_", "PYTHON"))}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HYDRA_FULL_ERROR="0", WANDB_MODE="offline",
               VCM_ZOO_CACHE=str(tmp_path / "zoo-cache"))
    where = _run([python, "-c", "import vcm, vcm.utils.config as c; print(vcm.__file__, c.CONF_DIR, c.CHECKOUT_ROOT)"],
                 cwd=work, env=env).stdout.split()
    assert all(not w.startswith(str(ROOT)) for w in where) and where[2] == "None", where

    # vcm-eval on two frames; the record is written under the current folder.
    bin_dir = venv / "bin"
    _run([bin_dir / "vcm-eval", "codec=jpeg", "data=kitti_tiny", f"data.root={kitti_tiny_root}", "max_images=2",
          "detector=none"], cwd=work, env=env)
    (record,) = (work / "results").glob("jpeg*.json")
    assert json.loads(record.read_text())["num_images"] == 2

    # vcm-compress / vcm-decompress by zoo name: the weights fetched on first use from VCM_ZOO_URL.
    served = tmp_path / "served"
    served.mkdir()
    shutil.copyfile(zoo.entry(MODEL).path, served / f"{MODEL}.pt")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        listed = _run([bin_dir / "vcm-zoo", "list"], cwd=work, env=env).stdout
        assert f"{MODEL}" in listed and "not found (vcm-zoo fetch)" in listed
        env[zoo.ZOO_URL_ENV] = url
        frame = kitti_tiny_root / "training" / "image_2" / "000001.png"
        _run([bin_dir / "vcm-compress", "--model", MODEL, frame, work / "frame.vcm"], cwd=work, env=env)
        _run([bin_dir / "vcm-decompress", "--model", MODEL, work / "frame.vcm", work / "decoded.png"], cwd=work, env=env)
        fetched = _run([bin_dir / "vcm-zoo", "fetch", MODEL, "--from", url], cwd=work, env=env).stdout
        assert f"{MODEL}: {tmp_path / 'zoo-cache' / MODEL}.pt (sha256 verified)" in fetched
    finally:
        server.shutdown()
        server.server_close()
    assert sorted(p.name for p in (tmp_path / "zoo-cache").iterdir()) == [f"{MODEL}.pt"]  # no partial file
    from PIL import Image

    assert Image.open(work / "decoded.png").size == Image.open(frame).size
    assert 0 < (work / "frame.vcm").stat().st_size < frame.stat().st_size
