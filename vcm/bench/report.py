"""The benchmarks' summary table and Markdown report."""
from __future__ import annotations

from typing import Any

from vcm.bench.bpp import DEFAULT_TABLE_NOTE
from vcm.bench.common import GOALS


# ---------------------------------------------------------------------------------------------- report
def _verdict(value: float, goal: float) -> str:
    return "PASS" if value <= goal else "FAIL"


def summary_rows(result: dict) -> list[dict[str, Any]]:
    """One row per goal: what was measured, the value (and its CPU-time twin), the goal and PASS/FAIL."""
    rows = []
    if "codec" in result:
        c = result["codec"]
        for part in ("enc", "dec"):
            rows.append({"check": f"{part}ode time, vcm / CompressAI direct", "value": c[f"{part}_ratio"],
                         "cpu_value": c[f"{part}_cpu_ratio"], "goal": GOALS["codec"], "kind": "ratio"})
    if "bpp" in result:
        b = result["bpp"]
        rows.append({"check": "real / estimated bits - 1, mean per image", "value": b["mean_overhead"],
                     "goal": GOALS["bpp"], "kind": "percent"})
        rows.append({"check": "real / estimated bits - 1, pooled", "value": b["pooled_overhead"],
                     "goal": GOALS["bpp"], "kind": "percent"})
        rows.append({"check": "of which vcm's container header, pooled", "value": b["header_overhead_pooled"],
                     "goal": GOALS["bpp"], "kind": "percent"})
    if "train" in result:
        rows.append({"check": "training step, Lightning / plain PyTorch", "value": result["train"]["ratio"],
                     "cpu_value": result["train"]["cpu_ratio"], "goal": GOALS["train"], "kind": "ratio"})
    for r in rows:
        r["result"] = _verdict(r["value"], r["goal"])
    return rows


def _fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.2f} %" if kind == "percent" else f"{value:.3f}"


def _goal(value: float, kind: str) -> str:
    return f"<= {100 * value:.0f} %" if kind == "percent" else f"<= {value:.2f}"


def render_markdown(result: dict) -> str:
    """The README-ready Markdown of a benchmark result."""
    env = result["environment"]
    lines = [
        "### Benchmarks",
        "",
        (
            f"Measured with `{result['command']}` ({result['created'][:10]}; {env['cpu_model']}, "
            f"{env['cpu_count']} cores shared with other jobs, torch {env['torch']} with {env['torch_threads']} "
            f"thread(s), CompressAI {env['compressai']}, Lightning {env['lightning']}). Ratios are medians of "
            "wall-clock times; the CPU-time column is the same ratio of process CPU times, which other jobs on "
            "the machine disturb less."
        ),
        "",
        "| check | measured | CPU-time ratio | goal | result |",
        "|---|---:|---:|---:|:---:|",
    ]
    for r in result["summary"]:
        lines.append(f"| {r['check']} | {_fmt(r['value'], r['kind'])} | {_fmt(r.get('cpu_value'), r['kind'])} | "
                     f"{_goal(r['goal'], r['kind'])} | {r['result']} |")
    lines.append("")
    if "codec" in result:
        c = result["codec"]
        m = c["model"]
        md = c["median"]
        lines += [
            (
                f"- Coding time: frame {c['frame']['name']} ({c['frame']['width']}x{c['frame']['height']}), "
                f"{m['codec']} N={m['N']} M={m['M']} ({m['weights']}); median of {c['repeats']} interleaved rounds "
                f"after a warm-up: vcm {md['vcm_enc_s']:.3f} s / {md['vcm_dec_s']:.3f} s, "
                f"CompressAI direct {md['direct_enc_s']:.3f} s / {md['direct_dec_s']:.3f} s (encode / decode); "
                f"identical strings: {c['same_strings']}, identical decoded image: {c['same_decoded_image']}."
            ),
        ]
    if "bpp" in result:
        b = result["bpp"]
        m = b["model"]
        t = b["training"]
        parts = [f"container header {b['mean_header_bytes']:.1f} bytes per image ({100 * b['header_overhead_pooled']:+.3f} %)"]
        if b.get("scale_table_overhead_pooled") is not None:
            parts.append(f"CompressAI's rounding of the predicted scales up to its {b['scale_table_levels']}-entry scale table "
                         f"{100 * b['scale_table_overhead_pooled']:+.3f} %")
            parts.append(f"range coder {100 * b['range_coder_overhead_pooled']:+.3f} %")
        else:
            parts.append(f"entropy coder {100 * b['coder_overhead_pooled']:+.3f} %")
        fine = b.get("fine_table")
        lines += [
            (
                f"- Real vs estimated bits: {m['codec']} N={m['N']} M={m['M']} trained here for {t['steps']} steps "
                f"({t['batch']} random {t['crop']}x{t['crop']} crops of the kitti_tiny training frames, Adam lr "
                f"{t['lr']:g}, lambda {t['lmbda']}; {m['weights'].split('; ', 1)[-1]}), on all {b['num_images']} "
                f"frames: mean bpp real {b['mean_bpp_real']:.4f}, estimated {b['mean_bpp_estimated']:.4f}. "
                f"The pooled excess {100 * b['pooled_overhead']:+.3f} % is: " + "; ".join(parts) + "."
                + (f" With a {fine['levels']}-entry scale table (same range{DEFAULT_TABLE_NOTE if fine['levels'] == 64 else ''}) the pooled excess is "
                   f"{100 * fine['pooled_overhead']:+.3f} %." if fine else "")
            ),
        ]
    if "train" in result:
        tr = result["train"]
        m = tr["model"]
        lines += [
            (
                f"- Training step: {m['codec']} N={m['N']} M={m['M']}, fixed batch {'x'.join(map(str, tr['batch']))}, "
                f"median of {len(tr['raw']['lightning_step_s'])} steps per loop (runs in A-B-B-A order, warm-up steps "
                f"excluded): Lightning {tr['median']['lightning_step_s']:.3f} s, plain {tr['median']['plain_step_s']:.3f} s"
                + (f"; batch-to-batch period ratio {tr['period_ratio']:.3f}." if tr.get("period_ratio") else ".")
            ),
        ]
    if "anchors" in result:
        a = result["anchors"]
        fr = a["frame"]
        lines += [
            "",
            (
                f"Throughput on {fr['name']} ({fr['width']}x{fr['height']}), median of {a['repeats']} runs after a "
                f"warm-up, one process, {env['torch_threads']} torch thread(s) (x265, SVT-AV1 and dav1d use their own "
                "threads):"
            ),
            "",
            "| codec | params | encode (frames/s) | decode (frames/s) | bpp | note |",
            "|---|---|---:|---:|---:|---|",
        ]
        for r in a["rows"]:
            params = ", ".join(f"{k}={v}" for k, v in r["params"].items() if v is not None and k not in ("timeout", "extra_args"))
            lines.append(f"| {r['codec']} | {params} | {r['enc_fps']:.2f} | {r['dec_fps']:.2f} | {r['bpp']:.3f} | {r['note']} |")
        for sk in a["skipped"]:
            lines.append(f"| {sk['codec']} | | - | - | - | skipped: {sk['reason']} |")
    lines.append("")
    return "\n".join(lines)


def print_summary(result: dict) -> None:
    print("\n=== vcm benchmark ===")
    print(f"  {'check':<45} {'measured':>10} {'(CPU time)':>11}   goal")
    for r in result["summary"]:
        cpu = f"({_fmt(r['cpu_value'], r['kind'])})" if r.get("cpu_value") is not None else ""
        print(f"  {r['check']:<45} {_fmt(r['value'], r['kind']):>10} {cpu:>11}   {_goal(r['goal'], r['kind']):<8} {r['result']}")
    if "anchors" in result:
        print("\n  codec            encode fps   decode fps      bpp")
        for r in result["anchors"]["rows"]:
            print(f"  {r['codec']:<16} {r['enc_fps']:>10.2f}   {r['dec_fps']:>10.2f}   {r['bpp']:>6.3f}")
        for sk in result["anchors"]["skipped"]:
            print(f"  {sk['codec']:<16} skipped: {sk['reason']}")
