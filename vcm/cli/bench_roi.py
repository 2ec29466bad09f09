"""``make bench-roi``: does ROI-awareness work, on real KITTI frames?

Every point starts from the zoo hyperprior of its rate point (``zoo:hyperprior-kitti-q<q>``) and
gets the same extra steps on kitti_mini train crops (``vcm/conf/experiment/roi_kitti.yaml``):

* ``roi_hyperprior``: ROI-weighted RD loss (alpha 0.9), its encoder conditioned on the shipped
  real-KITTI detector (``kitti_mobilenet_v2``); the decoder needs no detector;
* ``hyperprior``: the plain-RD fine-tune, same data and steps (the fair baseline);
* ``roi_zero_features``: the ROI codec with every detector feature replaced by zeros (what the
  detector's features buy);
* ``roi_boxes``: the ROI codec given the ground-truth ROI map instead of features (the bound
  of perfect localisation).

Each point is evaluated by real bitstreams on the kitti_mini test frames, with the shipped detector
on the decoded frames. Printed: the RD table with the ROI-to-background PSNR gap, BD-rates against
the hyperprior on ROI-PSNR, background PSNR, PSNR and mAP@0.5, and against the zero-features
ablation. ``--alpha-sweep`` adds roi_hyperprior at several alphas at one rate point, evaluated on the
validation frames: the ROI-PSNR vs background-PSNR trade-off a teleoperation user picks from
(``alpha_sweep.png``). A re-run keeps the points already trained and evaluated.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vcm.studies import Study, load_study, overrides
from vcm.utils.config import PROJECT_ROOT

#: the benchmark's settings (recipe, curves, default options), vcm/conf/study/bench_roi.yaml
PRESET = "bench_roi"
CURVES = ("hyperprior", "roi_hyperprior", "roi_zero_features", "roi_boxes")


def main(argv: list[str] | None = None) -> int:
    opts = load_study(PRESET, "options")
    ap = argparse.ArgumentParser(prog="python -m vcm.cli.bench_roi", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--steps", type=int, default=opts["steps"],
                    help="extra training steps per point from the zoo (the same for every curve); more = better numbers")
    ap.add_argument("--alpha", type=float, default=opts["alpha"])
    ap.add_argument("--detector-ckpt", help="another detector checkpoint for the ROI codec and the detection metrics")
    ap.add_argument("--object-crop-prob", type=float, default=opts["object_crop_prob"],
                    help="share of training crops placed around an object (data.object_crop_prob), for every curve")
    ap.add_argument("--qualities", type=int, nargs="+", default=list(opts["qualities"]),
                    help="rate points: zoo hyperpriors hyperprior-kitti-q<q> to start from")
    ap.add_argument("--only", nargs="+", choices=CURVES, help="train and evaluate only these curves")
    ap.add_argument("--no-boxes-curve", action="store_true", help="leave out the ground-truth ROI map bound")
    ap.add_argument("--alpha-sweep", type=float, nargs="*", default=None,
                    help=f"also train roi_hyperprior at these alphas (none given: {opts['alpha_sweep']}) and --alpha at "
                         f"--sweep-quality, evaluated on the validation frames")
    ap.add_argument("--sweep-quality", type=int, default=opts["alpha_sweep_quality"])
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args(argv)
    if a.steps < 1:
        ap.error(f"--steps {a.steps}: expected >= 1")
    bad = [x for x in [a.alpha, *(a.alpha_sweep or [])] if not 0.0 <= x <= 1.0]
    if bad:
        ap.error(f"alpha {bad[0]}: expected a value in [0, 1]")
    from vcm import zoo

    for q in {*a.qualities, a.sweep_quality}:
        if f"hyperprior-kitti-q{q}" not in zoo.entries():
            ap.error(f"quality {q}: no zoo model hyperprior-kitti-q{q} to start from; expected one of "
                     f"{sorted(n for n in zoo.entries() if n.startswith('hyperprior-kitti-q'))}")

    def preset(alpha: float) -> dict:
        return load_study(PRESET, steps=a.steps, alpha=alpha, object_crop_prob=a.object_crop_prob,
                          detector_checkpoint=[f"detector.checkpoint={a.detector_ckpt}"] if a.detector_ckpt else [])

    cfg = preset(a.alpha)
    st = Study("bench-roi", a.out or PROJECT_ROOT / "outputs" / cfg["out"], dry_run=a.dry_run)
    recipe, det = overrides(cfg["recipe"]), overrides(cfg["detector"])
    evaluation = ["codec=checkpoint", *overrides(cfg["frames"]), *det]
    for name, ov in cfg["curves"].items():
        if (a.only and name not in a.only) or (name == "roi_boxes" and a.no_boxes_curve and not a.only):
            continue
        for q in a.qualities:
            point = f"{name}_q{q}"
            ckpt = st.train(point, [*recipe, *overrides(ov), f"quality={q}"])
            if ckpt:
                st.evaluate(f"eval_{point}", [*evaluation, f"codec.ckpt={ckpt}", f"split={cfg['eval_split']}"])
    sweep = None
    if a.alpha_sweep is not None:
        alphas = sorted({a.alpha, *(a.alpha_sweep or opts["alpha_sweep"])})
        sweep = Study("bench-roi alpha sweep", st.out / "alpha-sweep", dry_run=a.dry_run)
        for alpha in alphas:
            point = f"roi_hyperprior_q{a.sweep_quality}_alpha{alpha:g}"
            ov = overrides(preset(alpha)["curves"]["roi_hyperprior"])
            ckpt = sweep.train(point, [*recipe, *ov, f"quality={a.sweep_quality}", f"variant=alpha{alpha:g}"])
            if ckpt:
                sweep.evaluate(f"eval_{point}", [*evaluation, f"codec.ckpt={ckpt}", "split=val"])
    if not a.dry_run:
        from vcm.cli.rd import main as rd

        found = print_points(st.results, f"kitti_mini {cfg['eval_split']} frames")
        curves = set(found["curve"]) if not found.empty else set()
        for anchor, bd in cfg["bd_anchors"].items():
            label, suffix = bd["label"], bd["suffix"]
            if not any(c == anchor or c.startswith(f"{anchor}/") for c in curves):
                print(f"\n(no {anchor} points here: no BD-rates against {label})", flush=True)
                continue
            for m in cfg["bd_metrics"]:
                print(f"\nBD-rate vs {label} on {m} (kitti_mini {cfg['eval_split']} frames, real bitstreams):", flush=True)
                rd(["bd", "--anchor", anchor, "--metric", m, str(st.results), "--out", str(st.out / f"bd_{m}{suffix}.csv"),
                    *cfg["bd_options"].get(m, [])])
        if sweep is not None:
            table = print_points(sweep.results, "kitti_mini val frames: the alpha trade-off at one rate point")
            if not table.empty:
                plot_alpha_sweep(table, sweep.out / "alpha_sweep.png")
    return max(st.finish(), sweep.finish() if sweep is not None else 0)


def print_points(results: Path, frames: str):
    """Print every evaluated point with its ROI-to-background PSNR gap (how the codec shares its
    quality) and its detection metrics; returns the table of the records (:func:`vcm.rd.table.collect`)."""
    from vcm.rd.table import PARAM_PREFIX, collect

    df = collect(results)
    if df.empty:
        return df
    q, al = f"{PARAM_PREFIX}quality", f"{PARAM_PREFIX}alpha"
    df = df.sort_values([c for c in ("curve", q, al) if c in df])
    print(f"\nPoints ({frames}, real bitstreams; gap = ROI-PSNR - background PSNR; detection by the shipped detector "
          f"on the decoded frames):", flush=True)
    print(f"{'curve':<34} {'q':>2} {'alpha':>5} {'bpp_real':>8} {'psnr':>6} {'roi_psnr':>8} {'bg_psnr':>7} {'gap':>6} "
          f"{'mAP@0.5':>7} {'Car AP|R40 mod':>14}")
    for _, r in df.iterrows():
        quality = int(r[q]) if q in df and r[q] == r[q] else "-"
        alpha = f"{r[al]:.2f}" if al in df and r[al] == r[al] else "-"
        print(f"{r['curve']:<34} {quality!s:>2} {alpha:>5} {r['bpp_real']:8.3f} {r['psnr']:6.2f} {r['roi_psnr']:8.2f} "
              f"{r['bg_psnr']:7.2f} {r['roi_psnr'] - r['bg_psnr']:+6.2f} {r.get('map_50', float('nan')):7.3f} "
              f"{100 * r.get('kitti_ap_car_moderate', float('nan')):13.2f}%", flush=True)
    return df


def plot_alpha_sweep(df, path: Path) -> None:
    """ROI-PSNR against background PSNR, one point per alpha (labelled with alpha and bpp)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vcm.rd.table import PARAM_PREFIX

    al = f"{PARAM_PREFIX}alpha"
    df = df.sort_values(al)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(df["bg_psnr"], df["roi_psnr"], "o-")
    for _, r in df.iterrows():
        ax.annotate(f"α={r[al]:g}, {r['bpp_real']:.3f} bpp", (r["bg_psnr"], r["roi_psnr"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    ax.set_xlabel("background PSNR (dB)")
    ax.set_ylabel("ROI-PSNR (dB)")
    ax.set_title("roi_hyperprior: the alpha trade-off (kitti_mini val)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"alpha trade-off plot: {path}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
