"""Collect results records into one table (one row per record = one RD point).

Columns, in order:

* ``curve``: the RD curve a point belongs to. A curve is every record of one codec, split by the
  ``variant`` parameter when a record has one (``"<codec>/<variant>"``, e.g. two model
  configurations of one codec family); otherwise the curve is the codec name. Other parameters
  (``lambda``, ``quality``, ``qp``, ...) are the operating points along the curve.
* ``codec``, ``dataset``, ``split``, ``num_images``
* ``param.<name>``: one column per parameter (nested parameters as ``param.a.b``)
* one column per metric, under the metric's own name (``bpp_real``, ``psnr``, ``map_50``, ...)
* ``git_commit``, ``detector_name``, ``detector_hash``, ``created``, ``params_json`` (the
  parameters as canonical JSON, which identifies an operating point), ``record_path``.

Published curves (:mod:`vcm.rd.published`) join a table through :func:`add_curves`: one row per
point with the curve's dataset, its split and number of images when known (else missing), its
metrics, and the file it came from in ``record_path``; they have no parameters, commit or
detector.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from vcm.rd.record import RecordError, read_record
from vcm.utils.io import atomic_write_text
from vcm.utils.names import did_you_mean

if TYPE_CHECKING:
    from vcm.rd.published import PublishedCurve

LEADING_COLUMNS = ["curve", "codec", "dataset", "split", "num_images"]
TRAILING_COLUMNS = ["git_commit", "detector_name", "detector_hash", "created", "params_json", "record_path"]
PARAM_PREFIX = "param."
_FIXED = set(LEADING_COLUMNS) | set(TRAILING_COLUMNS)

#: Codecs that are a reference level, not an RD curve (the detector on uncompressed images): shown
#: as a horizontal line in plots and left out of BD tables.
UNCOMPRESSED_CODECS: frozenset[str] = frozenset({"none"})


def curve_label(codec: str, params: dict) -> str:
    """Curve of a record: ``codec``, or ``codec/variant`` when ``params`` has a ``variant``."""
    variant = params.get("variant") if isinstance(params, dict) else None
    return codec if variant in (None, "") else f"{codec}/{variant}"


def find_record_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """All ``*.json`` files under the given folders (recursively) and the given files.

    Hidden files and folders (names starting with ``.``) are skipped: they hold temporary files of
    atomic writes and tool state, never records.

    Raises:
        FileNotFoundError: naming a path that does not exist.
    """
    found: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in sorted(p.rglob("*.json")):
                rel = f.relative_to(p).parts
                if f.is_file() and not any(part.startswith(".") for part in rel):
                    found.append(f)
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"results path {p} does not exist (expected a folder of *.json records or a file)")
    seen: set[Path] = set()
    unique = []
    for f in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)
    elif isinstance(value, (list, dict)):
        out[prefix] = json.dumps(value, sort_keys=True)
    else:
        out[prefix] = value


def record_to_row(record: dict, path: str | os.PathLike | None = None) -> dict:
    """Flatten one validated record into a table row (see the module docstring for columns)."""
    params = record["params"]
    det = record.get("detector") or {}
    row: dict = {
        "curve": curve_label(record["codec"], params),
        "codec": record["codec"],
        "dataset": record["dataset"],
        "split": record["split"],
        "num_images": record["num_images"],
    }
    for k, v in params.items():
        _flatten(f"{PARAM_PREFIX}{k}", v, row)
    for name, value in record["metrics"].items():
        col = name if name not in _FIXED and not name.startswith(PARAM_PREFIX) else f"metric.{name}"
        row[col] = math.nan if value is None else float(value)
    row.update(
        git_commit=record.get("git_commit"),
        detector_name=det.get("name"),
        detector_hash=det.get("weights_hash"),
        created=record.get("created"),
        params_json=json.dumps(params, sort_keys=True, separators=(",", ":")),
        record_path=None if path is None else str(path),
    )
    return row


def collect(paths: Iterable[str | os.PathLike] | str | os.PathLike) -> pd.DataFrame:
    """Read every results record under ``paths`` into a DataFrame, one row per record.

    Files that are not valid records are skipped with a warning naming each one.

    Args:
        paths: folders (searched recursively for ``*.json``) and/or record files.

    Returns:
        DataFrame with the columns described in the module docstring, sorted by curve and rate.
        Empty (with the fixed columns) when nothing was found.

    Raises:
        FileNotFoundError: if one of ``paths`` does not exist.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    rows = []
    for f in find_record_files(paths):
        try:
            record = read_record(f)
        except (RecordError, OSError) as e:
            detail = str(e)
            warnings.warn(f"skipping {detail}" if str(f) in detail else f"skipping {f}: {detail}", stacklevel=2)
            continue
        rows.append(record_to_row(record, f))
    return _frame(rows)


def add_curves(df: pd.DataFrame, curves: Sequence[PublishedCurve], rate: str = "bpp_real") -> pd.DataFrame:
    """The table with the points of published curves appended.

    Args:
        df: a results table (may be empty).
        curves: curves from :func:`vcm.rd.published.read_curves`.
        rate: the table column that receives the curves' bits per pixel.

    Returns:
        A new table; ``num_images`` becomes a nullable integer column.

    Raises:
        ValueError: if a curve's name is already a curve (or codec) of the table.
    """
    if not curves:
        return df
    taken = set(df["curve"].astype(str)) | set(df["codec"].astype(str))
    rows = []
    for c in curves:
        if c.name in taken:
            raise ValueError(
                f"published curve {c.name!r} ({c.source}) has the name of a curve of the results; rename it in its file"
            )
        for i in range(c.rate.size):
            row = {"curve": c.name, "codec": c.name, "dataset": c.dataset, "split": c.split,
                   "num_images": c.num_images, rate: float(c.rate[i])}
            row.update({m: float(v[i]) for m, v in c.metrics.items()})
            row["params_json"] = json.dumps({"point": i, "published": str(c.source)}, sort_keys=True)
            row["record_path"] = None if c.source is None else str(c.source)
            rows.append(row)
    out = _frame(df.to_dict("records") + rows)
    out["num_images"] = pd.array(
        [None if pd.isna(n) else int(n) for n in out["num_images"]], dtype="Int64"
    )
    return out


def _frame(rows: list[dict]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame(columns=LEADING_COLUMNS + TRAILING_COLUMNS)
    df = pd.DataFrame(rows)
    for col in LEADING_COLUMNS + TRAILING_COLUMNS:
        if col not in df.columns:
            df[col] = None
    params = sorted(c for c in df.columns if c.startswith(PARAM_PREFIX))
    metrics = sorted(c for c in df.columns if c not in _FIXED and c not in params)
    df = df[LEADING_COLUMNS + params + metrics + TRAILING_COLUMNS]
    # which parameters hold only integers (pandas stores a column some records lack as float: 3.0)
    df.attrs["integer_params"] = [c for c in params if (v := [r[c] for r in rows if r.get(c) is not None])
                                  and all(isinstance(x, int) and not isinstance(x, bool) for x in v)]
    sort_cols = ["curve"] + (["bpp_real"] if "bpp_real" in df.columns else []) + ["params_json"]
    return df.sort_values(sort_cols, kind="stable", na_position="last").reset_index(drop=True)


def param_columns(df: pd.DataFrame) -> list[str]:
    """The ``param.*`` columns of a results table."""
    return [c for c in df.columns if c.startswith(PARAM_PREFIX)]


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The metric columns of a results table (everything that is neither fixed nor a parameter)."""
    return [c for c in df.columns if c not in _FIXED and not c.startswith(PARAM_PREFIX)]


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a results table to CSV atomically."""
    out = df.copy()
    for c in df.attrs.get("integer_params", []):  # integer parameters stay integers in the file
        if c in out.columns:
            out[c] = out[c].astype("Int64")
    return atomic_write_text(path, out.to_csv(index=False))


def load_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a table written by :func:`write_csv`.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file, if it lacks the ``curve``/``codec`` columns.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results table {path} does not exist")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable CSV results table ({e})") from None
    missing = [c for c in ("curve", "codec") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a results table from 'vcm-rd collect' (missing column(s) {missing})")
    return df


def select(
    df: pd.DataFrame,
    dataset: str | None = None,
    split: str | None = None,
    num_images: int | None = None,
) -> pd.DataFrame:
    """Rows of one test set (any criterion left None is not filtered).

    A published curve that does not say its split or size is kept by a split / size criterion
    (it matches any); its dataset is always known.
    """
    mask = pd.Series(True, index=df.index)
    if dataset is not None:
        mask &= df["dataset"].astype(str) == str(dataset)
    if split is not None:
        mask &= df["split"].isna() | (df["split"].astype(str) == str(split))
    if num_images is not None:
        sizes = pd.to_numeric(df["num_images"], errors="coerce")
        mask &= sizes.isna() | (sizes == int(num_images))
    return df[mask.astype(bool)].reset_index(drop=True)


def known_value(value) -> str | None:
    """A test-set field as text, or None when it is missing (a published curve's split or size)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return str(int(value)) if isinstance(value, (float, np.floating)) and float(value).is_integer() else str(value)


def check_single_test_set(df: pd.DataFrame) -> None:
    """Refuse to compare points measured on different test sets.

    A test set is (dataset, split, num_images). A published curve that does not say its split or
    size matches any split / size of its dataset; every other difference is a mix.

    Raises:
        ValueError: if the table holds points of more than one test set, listing them.
    """
    if df.empty:
        raise ValueError("the results table is empty: no records to compare")
    sets: dict[tuple, int] = {}
    for key in zip(df["dataset"], df["split"], df["num_images"]):
        key = tuple(known_value(v) for v in key)
        sets[key] = sets.get(key, 0) + 1

    def clash(a: tuple, b: tuple) -> bool:
        return any(x is not None and y is not None and x != y for x, y in zip(a, b))

    keys = list(sets)
    if any(clash(a, b) for i, a in enumerate(keys) for b in keys[i + 1:]):
        listing = ", ".join(
            f"{d}/{s or '?'} ({n or '?'} images): {c} point(s)" for (d, s, n), c in sorted(sets.items(), key=str)
        )
        raise ValueError(
            "the results mix test sets, whose points cannot be compared: "
            f"{listing}. Choose one with --dataset/--split/--num-images (vcm.rd.table.select)."
        )
    hashes = {h for h in df.get("detector_hash", pd.Series(dtype=object)).dropna().unique()}
    if len(hashes) > 1:
        warnings.warn(
            f"the results were measured with {len(hashes)} different detectors ({sorted(hashes)}); "
            "task metrics are only comparable under one detector",
            stacklevel=2,
        )


def test_set_label(df: pd.DataFrame) -> str:
    """``"dataset/split, N images"`` of a single-test-set table, from the rows that know the most."""
    known = df.assign(_k=df["split"].notna().astype(int) + df["num_images"].notna().astype(int))
    r = known.sort_values("_k", ascending=False, kind="stable").iloc[0]
    return f"{r['dataset']}/{known_value(r['split']) or '?'}, {known_value(r['num_images']) or '?'} images"


def resolve_curve(df: pd.DataFrame, name: str) -> str:
    """The curve label for ``name``: a curve label, or a codec with exactly one curve.

    Raises:
        ValueError: listing the curves, if ``name`` matches none or is an ambiguous codec.
    """
    curves = sorted(set(df["curve"].astype(str)))
    if name in curves:
        return name
    of_codec = sorted(set(df.loc[df["codec"].astype(str) == name, "curve"].astype(str)))
    if len(of_codec) == 1:
        return of_codec[0]
    if len(of_codec) > 1:
        raise ValueError(f"codec {name!r} has several curves {of_codec}; name one of them")
    codecs = set(df["codec"].astype(str))
    raise ValueError(f"no curve or codec named {name!r} in the results{did_you_mean(name, set(curves) | codecs)}; "
                     f"curves: {curves}")


@dataclass(frozen=True)
class CurvePoints:
    """The RD points of one curve for one metric."""

    rate: np.ndarray  # [N]
    quality: np.ndarray  # [N]
    dropped: int  # records of the curve without a finite rate or metric value
    rows: pd.DataFrame  # the rows used, sorted by rate


def curve_points(df: pd.DataFrame, curve: str, rate: str, metric: str) -> CurvePoints:
    """Points of ``curve``, one per operating point, sorted by rate.

    A re-run of the same operating point (same codec and parameters) replaces the earlier one: the
    record with the latest ``created`` time is kept.
    """
    rows = df[df["curve"].astype(str) == curve]
    if "created" in rows.columns and "params_json" in rows.columns:
        rows = rows.sort_values("created", kind="stable", na_position="first")
        rows = rows.drop_duplicates("params_json", keep="last")
    ok = np.isfinite(pd.to_numeric(rows[rate], errors="coerce").to_numpy(dtype=float)) & np.isfinite(
        pd.to_numeric(rows[metric], errors="coerce").to_numpy(dtype=float)
    )
    used = rows[ok].sort_values(rate, kind="stable")
    return CurvePoints(
        rate=used[rate].to_numpy(dtype=float),
        quality=used[metric].to_numpy(dtype=float),
        dropped=int((~ok).sum()),
        rows=used,
    )
