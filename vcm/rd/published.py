"""RD curves from outside vcm (published results) and vcm curves for outside tools.

Two formats are read:

* CompressAI's results JSON, as in CompressAI's ``results/`` folder::

      {"name": "bmshj2018-hyperprior", "description": "...",
       "meta": {"dataset": "kodak", ...},                      # optional
       "results": {"bpp": [...], "psnr-rgb": [...], "ms-ssim-rgb": [...], ...}}

  ``psnr-rgb``/``psnr`` become vcm's ``psnr``, ``ms-ssim-rgb``/``ms-ssim`` its ``ms_ssim``,
  ``encoding_time``/``decoding_time`` its ``enc_s``/``dec_s``; other keys keep their name with
  ``-`` read as ``_``. ``null`` values are missing points of that metric.
* a plain CSV with a header ``curve,bpp,<metric>[,<metric>...]``, one RD point per line, several
  curves per file; optional ``dataset``, ``split`` and ``num_images`` columns say which test set
  a curve was measured on.

A curve is compared only with points of its own test set, so every curve needs a dataset: the
file's own (``meta.dataset``, the ``dataset`` column) or, when the file says none, the one given
by the caller. A file that names a dataset other than the caller's is refused rather than
relabelled. Split and number of images are optional; when unknown, the curve is taken to match
any split / size of its dataset (see :func:`vcm.rd.table.check_single_test_set`).

:func:`to_compressai_json` writes the reverse: any curve's points in CompressAI's format, with the
test set in ``meta``.
"""
from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vcm.errors import DataError

#: CompressAI results keys -> vcm metric names (read); the first key of a metric is written.
COMPRESSAI_TO_VCM: dict[str, str] = {
    "psnr-rgb": "psnr",
    "psnr": "psnr",
    "ms-ssim-rgb": "ms_ssim",
    "ms-ssim": "ms_ssim",
    "encoding_time": "enc_s",
    "decoding_time": "dec_s",
}
VCM_TO_COMPRESSAI: dict[str, str] = {}
for _key, _name in COMPRESSAI_TO_VCM.items():
    VCM_TO_COMPRESSAI.setdefault(_name, _key)
RATE_KEY = "bpp"
_TEST_SET_COLUMNS = ("dataset", "split", "num_images")


@dataclass(frozen=True)
class PublishedCurve:
    """The RD points of one curve from outside vcm's records.

    Attributes:
        name: the curve's label (must differ from every other curve compared with it).
        dataset: the test set's dataset.
        rate: [N] bits per pixel.
        metrics: vcm metric name -> [N] values (NaN = no value at that point).
        source: the file it was read from.
        split: the test set's split, or None when the source does not say.
        num_images: the test set's size, or None when the source does not say.
        description: free text from the source.
    """

    name: str
    dataset: str
    rate: np.ndarray
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    source: Path | None = None
    split: str | None = None
    num_images: int | None = None
    description: str = ""


def _metric_name(key: str) -> str:
    return COMPRESSAI_TO_VCM.get(key, key.replace("-", "_"))


def _resolve_dataset(stated: str | None, given: str | None, where: str) -> str:
    if stated and given and str(stated) != str(given):
        raise DataError(
            f"{where} is for dataset {stated!r}, not {given!r}: a curve is compared only on its own dataset "
            "(choose the records' test set with --dataset/--split/--num-images instead)"
        )
    dataset = stated or given
    if not dataset:
        raise DataError(f"{where} does not say which dataset it was measured on; give it with --curve-dataset NAME")
    return str(dataset)


def _numbers(values, where: str) -> np.ndarray:
    if not isinstance(values, list):
        raise DataError(f"{where} is {type(values).__name__}, expected a list of numbers")
    out = np.full(len(values), math.nan)
    for i, v in enumerate(values):
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise DataError(f"{where}[{i}] is {v!r}, expected a number or null")
        out[i] = float(v)
    return out


def read_compressai_json(path: str | os.PathLike, dataset: str | None = None) -> PublishedCurve:
    """Read one curve in CompressAI's results-JSON format.

    Args:
        path: the JSON file.
        dataset: the dataset, for files without ``meta.dataset``.

    Raises:
        DataError: naming the file, if it is not valid JSON, lacks ``name`` or ``results.bpp``,
            holds non-numbers, lists of unequal length, or no dataset can be told.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"curve file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a JSON file ({e}); expected CompressAI's results format") from None
    shape = '{"name": ..., "results": {"bpp": [...], "psnr-rgb": [...]}}'
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), dict):
        raise DataError(f"{path}: no 'results' object; expected CompressAI's results format {shape}")
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"{path}: no 'name' string; expected CompressAI's results format {shape}")
    results = doc["results"]
    if RATE_KEY not in results:
        raise DataError(f"{path}: 'results' has no '{RATE_KEY}' list (keys: {sorted(results)})")
    rate = _numbers(results[RATE_KEY], f"{path}: results.{RATE_KEY}")
    if rate.size == 0:
        raise DataError(f"{path}: results.{RATE_KEY} is empty; expected one value per RD point")
    metrics: dict[str, np.ndarray] = {}
    for key, values in results.items():
        if key == RATE_KEY:
            continue
        vals = _numbers(values, f"{path}: results.{key}")
        if vals.size != rate.size:
            raise DataError(f"{path}: results.{key} has {vals.size} values for {rate.size} '{RATE_KEY}' values")
        metric = _metric_name(key)
        if metric in metrics:
            raise DataError(f"{path}: results has two keys for the metric {metric!r} (e.g. 'psnr' and 'psnr-rgb')")
        metrics[metric] = vals
    meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
    num_images = meta.get("num_images")
    return PublishedCurve(
        name=name.strip(),
        dataset=_resolve_dataset(meta.get("dataset"), dataset, f"{path} (curve {name!r})"),
        rate=rate,
        metrics=metrics,
        source=path,
        split=None if meta.get("split") in (None, "") else str(meta["split"]),
        num_images=None if num_images is None else int(num_images),
        description=str(doc.get("description") or ""),
    )


def read_curves_csv(path: str | os.PathLike, dataset: str | None = None) -> list[PublishedCurve]:
    """Read the curves of a CSV with header ``curve,bpp,<metric>...`` (plus optional ``dataset``,
    ``split``, ``num_images`` columns), in the order they first appear.

    Args:
        path: the CSV file.
        dataset: the dataset, for a file without a ``dataset`` column (or with empty cells).

    Raises:
        DataError: naming the file and line, on a missing column, a non-numeric value, a curve
            whose lines disagree on their test set, or no dataset.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FileNotFoundError(f"curve file {path} does not exist") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text CSV file ({e})") from None
    reader = csv.reader(text.splitlines())
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in ("curve", RATE_KEY) if c not in header]
    if missing:
        raise DataError(f"{path}:1: header {header} lacks {missing}; expected 'curve,{RATE_KEY},<metric>,...'")
    if len(set(header)) != len(header):
        raise DataError(f"{path}:1: repeated column name in header {header}")
    metric_cols = [h for h in header if h not in ("curve", RATE_KEY, *_TEST_SET_COLUMNS)]
    points: dict[str, dict] = {}
    for lineno, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{lineno}: {len(row)} fields, expected {len(header)} ({','.join(header)})")
        cells = {h: c.strip() for h, c in zip(header, row)}
        name = cells["curve"]
        if not name:
            raise DataError(f"{path}:{lineno}: empty 'curve' field; expected the curve's name")
        values = {}
        for col in (RATE_KEY, *metric_cols):
            cell = cells[col]
            try:
                values[col] = math.nan if cell == "" else float(cell)
            except ValueError:
                raise DataError(f"{path}:{lineno}: column '{col}' is {cell!r}, expected a number (or empty)") from None
        test_set = tuple(cells.get(c) or None for c in _TEST_SET_COLUMNS)
        entry = points.setdefault(name, {"test_set": test_set, "line": lineno, "rows": []})
        if entry["test_set"] != test_set:
            raise DataError(
                f"{path}:{lineno}: curve {name!r} has dataset/split/num_images {test_set}, but "
                f"{entry['test_set']} on line {entry['line']}; one curve is measured on one test set"
            )
        entry["rows"].append(values)
    if not points:
        raise DataError(f"{path}: no RD points below the header")
    curves = []
    for name, entry in points.items():
        stated_dataset, split, num_images = entry["test_set"]
        try:
            n_images = None if num_images is None else int(num_images)
        except ValueError:
            raise DataError(f"{path}:{entry['line']}: num_images is {num_images!r}, expected an integer") from None
        rows = entry["rows"]
        curves.append(
            PublishedCurve(
                name=name,
                dataset=_resolve_dataset(stated_dataset, dataset, f"{path}:{entry['line']} (curve {name!r})"),
                rate=np.array([r[RATE_KEY] for r in rows]),
                metrics={_metric_name(c): np.array([r[c] for r in rows]) for c in metric_cols},
                source=path,
                split=split,
                num_images=n_images,
            )
        )
    return curves


def read_curves(paths: Iterable[str | os.PathLike], dataset: str | None = None) -> list[PublishedCurve]:
    """Read published curves from ``.json`` (CompressAI format) and ``.csv`` files.

    Raises:
        FileNotFoundError: naming a file that does not exist.
        DataError: on a malformed file, another suffix, or a curve name given twice.
    """
    curves: list[PublishedCurve] = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise FileNotFoundError(f"curve file {p} does not exist (expected a CompressAI .json or a .csv)")
        suffix = p.suffix.lower()
        if suffix == ".json":
            curves.append(read_compressai_json(p, dataset))
        elif suffix == ".csv":
            curves += read_curves_csv(p, dataset)
        else:
            raise DataError(f"{p}: unknown curve file type {suffix!r}; expected .json (CompressAI) or .csv")
    seen: dict[str, Path | None] = {}
    for c in curves:
        if c.name in seen:
            raise DataError(f"curve {c.name!r} is given twice ({seen[c.name]} and {c.source}); curve names must differ")
        seen[c.name] = c.source
    return curves


def to_compressai_json(
    name: str,
    rate: Sequence[float],
    metrics: Mapping[str, Sequence[float]],
    test_set: Mapping[str, object] | None = None,
    description: str = "",
) -> dict:
    """One curve in CompressAI's results-JSON format.

    Args:
        name: the curve's name.
        rate: [N] bits per pixel, written as ``results.bpp``.
        metrics: vcm metric name -> [N] values; ``psnr``, ``ms_ssim``, ``enc_s``, ``dec_s`` get
            CompressAI's keys, other metrics keep their names. Non-finite values become ``null``.
        test_set: ``dataset``, ``split``, ``num_images`` (and any other provenance) for ``meta``.
        description: free text.

    Returns:
        The JSON document as a dict (``json.dumps``-able).
    """
    def clean(values) -> list[float | None]:
        return [float(v) if v is not None and math.isfinite(float(v)) else None for v in values]

    results = {RATE_KEY: clean(rate)}
    for metric, values in metrics.items():
        if len(values) != len(rate):
            raise ValueError(f"metric {metric!r} has {len(values)} values for {len(rate)} rates")
        results[VCM_TO_COMPRESSAI.get(metric, metric)] = clean(values)
    meta = {"source": "vcm", **{k: v for k, v in (test_set or {}).items() if v is not None}}
    return {"name": name, "description": description, "meta": meta, "results": results}
