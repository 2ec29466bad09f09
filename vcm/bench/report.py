"""The benchmarks' summary table and Markdown report."""
from __future__ import annotations

from typing import Any

from vcm.bench.bpp import DEFAULT_TABLE_NOTE
from vcm.bench.common import AT_LEAST, GOALS

SPEEDUP_CHECKS = {
    "hyperprior": "training step, bf16-mixed + channels-last / fp32: hyperprior",
    "detector": "training step, bf16-mixed / fp32: detector",
    "lmsfc": "training step, bf16-mixed + channels-last / fp32: L-MSFC",
}


# ---------------------------------------------------------------------------------------------- report
def _verdict(value: float, goal: float | None, at_least: bool = False) -> str:
    """PASS / FAIL against an upper bound (a lower one with ``at_least``); ``report`` without a goal."""
    if goal is None:
        return "report"
    return "PASS" if (value >= goal if at_least else value <= goal) else "FAIL"


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
    if "precision" in result:
        p = result["precision"]
        for name, check in SPEEDUP_CHECKS.items():
            if name in p["speedup"]:
                sp = p["speedup"][name]
                rows.append({"check": check, "value": sp["ratio"], "cpu_value": sp["cpu_ratio"], "goal": sp["goal"],
                             "kind": "ratio"})
        lp = p["lightning_vs_plain"]
        rows.append({"check": "training step (bf16 + channels-last), Lightning / plain", "value": lp["ratio"],
                     "cpu_value": lp["cpu_ratio"], "goal": GOALS["precision_lightning"], "kind": "ratio"})
        rows.append({"check": "loader batches/s / training steps/s", "value": p["loader"]["ratio"],
                     "goal": GOALS["loader"], "kind": "ratio", "at_least": "loader" in AT_LEAST})
    for r in rows:
        r.setdefault("at_least", False)
        r["result"] = _verdict(r["value"], r["goal"], r["at_least"])
    return rows


def _fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.2f} %" if kind == "percent" else f"{value:.3f}"


def _goal(value: float | None, kind: str, at_least: bool = False) -> str:
    if value is None:
        return "-"
    op = ">=" if at_least else "<="
    return f"{op} {100 * value:.0f} %" if kind == "percent" else f"{op} {value:.2f}"


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
                     f"{_goal(r['goal'], r['kind'], r['at_least'])} | {r['result']} |")
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
    if "precision" in result:
        lines += _precision_lines(result["precision"])
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


def _shape(batch: list) -> str:
    if batch and isinstance(batch[0], list):
        return f"{len(batch)} frames of " + ", ".join(dict.fromkeys("x".join(map(str, b[1:][::-1])) for b in batch))
    return "x".join(map(str, batch))


def _precision_lines(p: dict) -> list[str]:
    """The notes under the table for section 5 (fast training settings)."""
    lines = []
    for sp in p["speedup"].values():
        m, md = sp["model"], sp["median"]
        what = (f"{m['codec']} N={m['N']} M={m['M']}" + (f" on the features of a {m['detector']}" if "detector" in m else "")
                if "codec" in m else f"{m['detector']} (resized to min {m['min_size']} / max {m['max_size']} px)")
        lines.append(
            f"- Training step of {what}, batch {_shape(sp['batch'])} of kitti_mini train, through a Trainer: "
            f"`{sp['fast_settings']}` {md['fast_step_s']:.3f} s, `trainer.precision=32-true` {md['fp32_step_s']:.3f} s "
            f"(medians of {len(sp['raw']['fast_step_s'])} steps each, A-B-B-A, warm-up steps excluded; same initial weights"
            + (f"; {sp['note']}" if sp.get("note") else "") + ").")
    lp = p["lightning_vs_plain"]
    lines.append(
        f"- Fast settings, Lightning {lp['median']['lightning_step_s']:.3f} s per step against a plain loop with "
        f"`torch.autocast(\"cpu\", dtype=torch.bfloat16)`, channels-last and the same fp32 entropy models "
        f"{lp['median']['plain_step_s']:.3f} s (batch {_shape(lp['batch'])}).")
    ld = p["loader"]
    lines.append(
        f"- Input pipeline: the {ld['data']} loader (batch {_shape(ld['batch'])}, {ld['num_workers']} workers, "
        f"cached frames: {ld['cache_images']}) gives {ld['loader_batches_per_s']:.1f} batches/s against "
        f"{ld['train_steps_per_s']:.2f} fast training steps/s of the hyperprior; its first epoch, which decodes "
        f"the frames into the cache, took {ld['first_epoch_s']:.2f} s for {ld['batches_per_epoch']} batches.")
    return lines


def print_summary(result: dict) -> None:
    print("\n=== vcm benchmark ===")
    print(f"  {'check':<62} {'measured':>10} {'(CPU time)':>11}   goal")
    for r in result["summary"]:
        cpu = f"({_fmt(r['cpu_value'], r['kind'])})" if r.get("cpu_value") is not None else ""
        print(f"  {r['check']:<62} {_fmt(r['value'], r['kind']):>10} {cpu:>11}   {_goal(r['goal'], r['kind'], r['at_least']):<8} {r['result']}")
    if "anchors" in result:
        print("\n  codec            encode fps   decode fps      bpp")
        for r in result["anchors"]["rows"]:
            print(f"  {r['codec']:<16} {r['enc_fps']:>10.2f}   {r['dec_fps']:>10.2f}   {r['bpp']:>6.3f}")
        for sk in result["anchors"]["skipped"]:
            print(f"  {sk['codec']:<16} skipped: {sk['reason']}")
