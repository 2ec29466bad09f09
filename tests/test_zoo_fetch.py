"""The zoo outside the checkout: weights looked for in VCM_ZOO_DIR, the checkout and the user cache;
fetched from a URL or a folder (``vcm-zoo fetch``, or on first use from VCM_ZOO_URL) and kept only
when their sha256 is the registry's; the registry's provenance names no machine.

The downloads come from an HTTP server on 127.0.0.1 serving a copy of a real zoo file."""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest

from vcm import zoo
from vcm.cli.zoo_store import main as vcm_zoo
from vcm.zoo.publish import codec_quality, machine_free_path, machine_free_training

NAME = "tiny-zoo-file"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def served(tmp_path):
    """A folder served over HTTP on a free port of 127.0.0.1: ``(folder, url)``."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/zoo"
    server.shutdown()
    server.server_close()


@pytest.fixture
def one_file_zoo(tmp_path, monkeypatch, served):
    """A registry of one entry, a copy of a shipped zoo file (the smallest), served at ``url``; no
    VCM_ZOO_* variable set, the cache in tmp_path. Returns ``(entry, served file, url)``."""
    shipped = min((e.path for e in zoo.entries().values() if e.path.is_file()), key=lambda p: p.stat().st_size)
    folder, url = served
    (folder / "zoo").mkdir()
    copy = folder / "zoo" / f"{NAME}.pt"
    shutil.copyfile(shipped, copy)
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"format": "vcm.zoo", "version": 1, "models": [
        {"name": NAME, "kind": "image_codec", "file": f"weights/{NAME}.pt", "sha256": zoo.sha256_file(copy),
         "architecture": "hyperprior"}]}))
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path / "package")
    monkeypatch.setattr(zoo, "REGISTRY", registry)
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path / "package" / "weights")
    for var in (zoo.ZOO_DIR_ENV, zoo.ZOO_URL_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(zoo.ZOO_CACHE_ENV, str(tmp_path / "cache"))
    return zoo.entry(NAME), copy, url


def _tamper(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))


def test_fetch_from_a_local_http_server_verifies_and_refuses_a_tampered_copy(one_file_zoo, tmp_path):
    e, copy, url = one_file_zoo
    cache = zoo.cache_dir()
    path = zoo.fetch(NAME, url)
    assert path == cache / f"{NAME}.pt" and zoo.sha256_file(path) == e.sha256
    assert zoo.weights_path(NAME) == path  # found in the cache, verified
    # A tampered copy on the server: refused, the verified file kept, no partial file left anywhere.
    _tamper(copy)
    with pytest.raises(zoo.ZooError, match=rf"{NAME}.*sha256.*registry says.*refused, nothing written"):
        zoo.fetch(NAME, url, force=True)
    assert sorted(p.name for p in cache.iterdir()) == [f"{NAME}.pt"] and zoo.sha256_file(path) == e.sha256
    fresh = tmp_path / "fresh"
    with pytest.raises(zoo.ZooError, match="refused"):
        zoo.fetch(NAME, url, dest=fresh)
    assert list(fresh.iterdir()) == []
    # A file the server does not have, and a server that is not there: one line each.
    with pytest.raises(zoo.ZooError, match="HTTP 404"):
        zoo.fetch(NAME, url + "/elsewhere", dest=fresh)
    with pytest.raises(zoo.ZooError, match="cannot fetch http://127.0.0.1:9/"):
        zoo.fetch(NAME, "http://127.0.0.1:9/zoo", dest=fresh)
    assert list(fresh.iterdir()) == []


def test_weights_are_looked_for_in_order_and_fetched_on_first_use(one_file_zoo, tmp_path, monkeypatch, capsys):
    _, _, url = one_file_zoo
    # Nowhere: the error says how to get it, for a package outside a git checkout (no git advice).
    with pytest.raises(zoo.ZooError) as err:
        zoo.weights_path(NAME)
    message = str(err.value)
    assert f"vcm-zoo fetch {NAME} --from" in message and zoo.ZOO_URL_ENV in message and zoo.ZOO_DIR_ENV in message
    assert "git" not in message and "\n" not in message
    # VCM_ZOO_URL: fetched into the cache on first use, then found there.
    monkeypatch.setenv(zoo.ZOO_URL_ENV, url)
    path = zoo.weights_path(NAME)
    assert path == zoo.cache_dir() / f"{NAME}.pt" and "fetching" in capsys.readouterr().err
    # VCM_ZOO_DIR comes first: its file is the one used, and refused when it is not the registry's.
    own = tmp_path / "own"
    own.mkdir()
    shutil.copyfile(path, own / f"{NAME}.pt")
    monkeypatch.setenv(zoo.ZOO_DIR_ENV, str(own))
    assert zoo.weights_path(NAME) == own / f"{NAME}.pt"
    _tamper(own / f"{NAME}.pt")
    with pytest.raises(zoo.ZooError, match=rf"{own / NAME}.pt has sha256 .*registry says.*delete it, then `vcm-zoo fetch {NAME}"):
        zoo.weights_path(NAME)
    # The checkout's copy comes before the cache.
    monkeypatch.delenv(zoo.ZOO_DIR_ENV)
    zoo.WEIGHTS_DIR.mkdir(parents=True)
    shutil.copyfile(path, zoo.WEIGHTS_DIR / f"{NAME}.pt")
    assert zoo.weights_path(NAME) == zoo.WEIGHTS_DIR / f"{NAME}.pt"


def test_vcm_zoo_fetch_list_and_exit_codes(one_file_zoo, tmp_path, capsys):
    _, copy, url = one_file_zoo
    folder = copy.parent
    assert vcm_zoo(["fetch", "all", "--from", str(folder), "--to", str(tmp_path / "to")]) == 0
    assert "sha256 verified" in capsys.readouterr().out and (tmp_path / "to" / f"{NAME}.pt").is_file()
    assert vcm_zoo(["list"]) == 0 and "not found (vcm-zoo fetch)" in capsys.readouterr().out
    assert vcm_zoo(["fetch", "no-such-model", "--from", url]) == 2
    assert "vcm-zoo: error: no zoo model called 'no-such-model'" in capsys.readouterr().err
    _tamper(copy)
    assert vcm_zoo(["fetch", NAME, "--from", url, "--force"]) == 2
    assert "refused" in capsys.readouterr().err


def test_provenance_names_no_machine():
    root, shared, runs = "/machine/repo", "/machine/repo/../shared", "/machine/runs"
    assert machine_free_path("/machine/repo/vcm/conf/data/splits/kitti_mini/train.txt", root, shared, runs) \
        == "vcm/conf/data/splits/kitti_mini/train.txt"
    assert machine_free_path("/machine/repo/../shared/data/kitti_mini", root, shared, runs) == "../shared/data/kitti_mini"
    assert machine_free_path("/machine/runs/q1/checkpoints", root, shared, runs) == "run:q1/checkpoints"
    assert machine_free_path("/elsewhere/records", root, shared, runs) == "external:records"
    assert machine_free_path("kitti_mini", root, shared, runs) == "kitti_mini"
    training = {"steps": 10, "init_from": "/machine/runs/base/checkpoints/best.ckpt",
                "config": {"init_from": "/machine/runs/base/checkpoints/best.ckpt",
                           "data": {"root": "/machine/repo/../shared/data/kitti_mini"},
                           "paths": {"root_dir": root, "shared_dir": shared, "output_dir": "/machine/runs/q1"}}}
    clean = machine_free_training(training, {"base": "hyperprior-kitti-q4"})
    assert clean["init_from"] == clean["config"]["init_from"] == "zoo:hyperprior-kitti-q4"
    assert clean["run"] == "q1" and clean["config"]["paths"] == {"root_dir": ".", "shared_dir": "../shared",
                                                                 "output_dir": "run:q1"}
    assert machine_free_training(training, {})["init_from"] == "run:base/checkpoints/best.ckpt"
    # A codec's quality is recorded only when its model's table gives that quality its lambda.
    table = {"q3": 0.125, "q6": 0.5}
    assert codec_quality(3, 0.125, table) == 3 and codec_quality(3, 0.5, table) is None and codec_quality(None, 0.5, table) is None


def _strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def test_shipped_registry_names_no_machine_and_the_right_rate_keys():
    raw = json.loads(zoo.REGISTRY.read_text())
    absolute = [s for m in raw["models"] for s in _strings(m) if s.startswith("/")]
    assert absolute == [], "registry provenance holds machine paths"
    for e in zoo.entries().values():
        assert e.training.get("run"), e.name
        if e.kind == "feature_codec":  # trained at lambdas of their own, not at a quality of the table
            assert e.quality is None and e.lmbda is not None, e.name
        elif e.kind == "image_codec":
            assert e.quality is not None and e.lmbda is not None, e.name
