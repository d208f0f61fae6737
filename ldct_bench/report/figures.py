"""Figures from the results store (matplotlib/seaborn), written as PNG, and as PDF too for a LaTeX report."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from skimage.transform import resize

from ..conventions import dose_label
from ..metrics.windows import DISPLAY_WINDOW, WINDOWS
from ..results import RunStore

_EXTENSIONS: ContextVar[tuple[str, ...]] = ContextVar("figure_extensions", default=("png", "pdf"))


@contextmanager
def written_as(*extensions: str):
    """Within the block, `save` writes these formats: a report asked for no LaTeX needs no PDF twin of each figure
    (a sixth of the reference report's time)."""
    token = _EXTENSIONS.set(extensions)
    try:
        yield
    finally:
        _EXTENSIONS.reset(token)


def save(fig, path: Path, dpi: int = 100) -> list[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in _EXTENSIONS.get():
        p = path.parent / f"{path.name}.{ext}"  # `path` is a stem; names from table values may hold dots
        # no creation date in the PDF, so a report rebuilt from the same store is byte-identical
        fig.savefig(p, dpi=dpi, metadata={"CreationDate": None} if ext == "pdf" else None)
        out.append(p)
    plt.close(fig)
    return out


def dose_curves(table: pd.DataFrame, path: Path, metric: str = "psnr", window: str = "founddiff") -> list[Path]:
    """Metric vs dose per method and anatomy; unseen doses shaded."""
    sub = table[(table.metric == metric) & (table.window == window)]
    anatomies = sorted(sub.anatomy.unique())
    fig, axes = plt.subplots(1, len(anatomies), figsize=(4.2 * len(anatomies), 3.4), squeeze=False, sharey=False)
    seen = sub.groupby("dose")["seen_dose"].all()
    for ax, anatomy in zip(axes[0], anatomies):
        d = sub[sub.anatomy == anatomy].groupby(["method", "dose"])["value"].mean().reset_index()
        _shade_unseen(ax, seen)
        sns.lineplot(data=d, x="dose", y="value", hue="method", marker="o", ax=ax, legend=ax is axes[0][-1])
        ax.set_xscale("log")
        ax.set_xticks(sorted(seen.index), [dose_label(x) for x in sorted(seen.index)])
        ax.minorticks_off()
        ax.set_title(anatomy)
        ax.set_xlabel("dose (shaded: unseen in training)")
        ax.set_ylabel(f"{metric.upper()} [{window}]")
    if axes[0][-1].get_legend():
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    fig.tight_layout()
    return save(fig, path)


def gain_vs_pixel(table: pd.DataFrame, path: Path, metric: str = "psnr", window: str = "founddiff") -> list[Path]:
    """Each method's mean gain over its low-dose input against the images' pixel size (column `pixel_mm`), one panel
    per dose: how a model's benefit moves as the acquisition's pixels move from those it was trained on."""
    sub = table[(table.metric == metric) & (table.window == window)]
    keys = ["run", "anatomy", "dose", "patient", "slice"]
    base = sub[sub.method == "ldct"].set_index(keys)["value"]
    rest = sub[sub.method != "ldct"].set_index(keys)
    gain = rest.assign(gain=rest["value"] - base.reindex(rest.index).to_numpy()).reset_index()
    mean = gain.groupby(["method", "dose", "pixel_mm"])["gain"].mean().reset_index()
    doses = sorted(mean.dose.unique())
    fig, axes = plt.subplots(1, len(doses), figsize=(3.6 * len(doses), 3.3), squeeze=False, sharey=True)
    for ax, dose in zip(axes[0], doses):
        sns.lineplot(data=mean[mean.dose == dose], x="pixel_mm", y="gain", hue="method", marker="o", ax=ax,
                     legend=ax is axes[0][-1])
        ax.axhline(0, color="grey", lw=0.8, ls="--")
        ax.set_title(f"dose {dose_label(dose)}")
        ax.set_xlabel("pixel size (mm)")
        ax.set_ylabel(f"{metric.upper()} gain over input (dB) [{window}]" if ax is axes[0][0] else "")
    if axes[0][-1].get_legend():
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    fig.tight_layout()
    return save(fig, path)


def box_plots(table: pd.DataFrame, path: Path, metric: str = "psnr", window: str = "founddiff") -> list[Path]:
    sub = table[(table.metric == metric) & (table.window == window)].copy()
    sub["doses"] = np.where(sub.seen_dose, "seen", "unseen")
    g = sns.catplot(data=sub, x="method", y="value", hue="doses", col="anatomy", kind="box", height=3.2, aspect=1.2,
                    sharey=False, fliersize=1.5)
    g.set_axis_labels("", f"{metric.upper()} [{window}]")
    for ax in g.axes.flat:
        ax.tick_params(axis="x", rotation=30)
    return save(g.figure, path)


def visual_grid(store: RunStore, methods: list[str], anatomy: str, doses: list[float], path: Path,
                zoom: float = 0.25) -> list[Path]:
    """Rows: full dose, low dose, each method; columns: doses; display window of the anatomy, zoomed inset,
    and a second block of |method - full dose| error maps (inside the window) on one colour bar scaled to the
    figure's own errors (error_scale), so that they are visible in any window.

    The insets are drawn into each panel's pixels and the margins are fixed: an inset Axes per panel and
    tight_layout took half of a grid's time (5 s for the reference run's 22 x 4 panels)."""
    w = WINDOWS[DISPLAY_WINDOW.get(anatomy, "abdomen")]
    rows = ["full dose", "low dose", *methods]
    n_rows, n_cols = len(rows) + len(methods), len(doses)
    width, height = 2.2 * n_cols, 2.2 * n_rows
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width, height), squeeze=False, gridspec_kw=dict(
        left=0.3 / width, right=0.93, bottom=0.05 / height, top=1 - 0.55 / height, wspace=0.04, hspace=0.04))
    errors: dict[tuple[int, int], np.ndarray] = {}
    for j, dose in enumerate(doses):
        ref = store.examples("_input", anatomy, dose)
        if ref is None:
            continue
        fd, ld = ref["fd"][0], ref["ld"][0]
        images = {"full dose": fd, "low dose": ld}
        for m in methods:
            ex = store.examples(m, anatomy, dose)
            images[m] = ex["pred"][0] if ex is not None else np.full_like(fd, np.nan)
        h, wd = fd.shape
        y0, x0, size = int(h * 0.4), int(wd * 0.4), max(8, int(h * zoom))
        for i, name in enumerate(rows):
            ax = axes[i][j]
            shown, (top, left, side) = _with_inset(images[name], y0, x0, size)
            ax.imshow(shown, cmap="gray", vmin=w.lo, vmax=w.hi)
            ax.add_patch(plt.Rectangle((left - 0.5, top - 0.5), side, side, fill=False, ec="black", lw=0.6))
            ax.add_patch(plt.Rectangle((x0, y0), size, size, fill=False, ec="yellow", lw=0.8))
        for k, name in enumerate(methods):
            errors[(k, j)] = np.abs(np.clip(images[name], w.lo, w.hi) - np.clip(fd, w.lo, w.hi))
        for i, name in enumerate(rows + [f"|{m} - FD|" for m in methods]):
            axes[i][0].set_ylabel(name, fontsize=8)
        axes[0][j].set_title(f"{dose_label(dose)}", fontsize=9)
    # one scale for every error map of the figure, so columns and methods compare: the 99th percentile of the
    # errors drawn (inside the display window), rounded up to 1, 2 or 5 x 10^k HU
    scale = error_scale(np.concatenate([e[np.isfinite(e)].ravel() for e in errors.values()])) if errors else 1.0
    shown = None
    for (k, j), error in errors.items():
        shown = axes[len(rows) + k][j].imshow(error, cmap="magma", vmin=0, vmax=scale)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{anatomy}, window {w.name} [{w.lo:g}, {w.hi:g}] HU; |error| maps 0-{scale:g} HU (colour bar)",
                 fontsize=9, y=1 - 0.12 / height)
    if shown is not None:
        block = [axes[len(rows) + k][-1].get_position() for k in range(len(methods))]
        bar = fig.add_axes((0.945, block[-1].y0, 0.012, block[0].y1 - block[-1].y0))
        fig.colorbar(shown, cax=bar).set_label("|method - full dose| (HU)", fontsize=8)
        bar.tick_params(labelsize=7)
    return save(fig, path, dpi=90)


def _with_inset(image: np.ndarray, y0: int, x0: int, size: int, share: float = 0.36):
    """`image` with its `size`-pixel crop at (y0, x0) enlarged into its top-right corner (`share` of its side), and
    where the inset lies: (top, left, side) in pixels."""
    h, w = image.shape
    side = max(size, round(share * min(h, w)))
    top, left = round(0.02 * h), w - side - round(0.02 * w)
    out = image.copy()
    out[top:top + side, left:left + side] = resize(image[y0:y0 + size, x0:x0 + size], (side, side), order=1,
                                                   preserve_range=True, anti_aliasing=False)
    return out, (top, left, side)


def error_scale(errors: np.ndarray) -> float:
    """The top of the error maps' colour bar: the 99th percentile of `errors` (HU), rounded up to 1, 2 or 5 x 10^k
    (a wide window's 750 HU would draw 30 HU errors black)."""
    top = float(np.percentile(errors, 99)) if errors.size else 0.0
    if not np.isfinite(top) or top <= 0:
        return 1.0
    base = 10.0 ** np.floor(np.log10(top))
    return float(next(m * base for m in (1, 2, 5, 10) if m * base >= top))


def perception_plot(perception: pd.DataFrame, path: Path) -> list[Path]:
    """DA-CLIP: estimated vs true dose (seen/unseen), and the dose embedding's first two principal components."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    p = perception.copy()
    p["doses"] = np.where(p.seen, "seen", "unseen")
    doses = sorted(p.dose.unique())
    x = p.dose.map({d: i for i, d in enumerate(doses)}) + np.random.default_rng(0).uniform(-0.25, 0.25, len(p))
    for label, part in (("seen", p.seen), ("unseen", ~p.seen)):  # own seeded jitter: the figure is reproducible
        a1.scatter(x[part], p.estimated_dose[part], s=6, label=label)
    a1.set_xticks(range(len(doses)), [dose_label(d) for d in doses])
    a1.legend(frameon=False)
    a1.set_yscale("log")
    a1.set_xlabel("true dose")
    a1.set_ylabel("DA-CLIP estimated dose")
    emb = p[[c for c in p.columns if c.startswith("dose_emb_")]].to_numpy()
    emb = emb - emb.mean(0)
    _, _, vt = np.linalg.svd(emb, full_matrices=False)
    pcs = emb @ vt[:2].T
    sc = a2.scatter(pcs[:, 0], pcs[:, 1], c=np.log(p.dose), cmap="viridis", s=8)
    fig.colorbar(sc, ax=a2, label="log dose")
    a2.set_xlabel("PC 1")
    a2.set_ylabel("PC 2")
    a2.set_title("dose embedding")
    fig.tight_layout()
    return save(fig, path)


def generalization_plot(g, path: Path) -> list[Path]:
    """Per axis held out: each method's regret (distance to the cell's best) over seen and over unseen cells, with
    its patient-bootstrap CI; the interpolation residual and the oracle gaps beside them where there are any."""
    measures = list(dict.fromkeys(c[0] for c in g.table.columns))
    axes_names = list(dict.fromkeys(m.split(" regret")[0] for m in measures if " regret" in m))
    gaps = [m for m in measures if m.startswith("oracle gap")]
    panels = axes_names + (["dose interpolation"] if "dose interpolation" in measures else []) + \
        (["oracle gap"] if gaps else [])
    if not panels:
        raise ValueError("nothing was held out of training (every dose, anatomy and dataset seen): no generalization "
                         "to plot.")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    methods = list(g.table.index)
    x = np.arange(len(methods))
    for ax, panel in zip(axes[0], panels):
        if panel in axes_names:
            parts = [("seen", f"{panel} regret, seen"), ("unseen", f"{panel} regret, unseen")]
        elif panel == "oracle gap":
            parts = [(key.split(" at ")[1], key) for key in gaps]
        else:
            parts = [("", panel)]
        width = 0.8 / len(parts)
        for k, (label, key) in enumerate(parts):
            mean, lo, hi = (g.table[(key, s)].to_numpy() for s in ("mean", "lo", "hi"))
            ax.bar(x + (k - (len(parts) - 1) / 2) * width, mean, width, yerr=[mean - lo, hi - mean], capsize=2,
                   label=label or None, color=None if label != "unseen" else "#e8913a")
        ax.set_xticks(x, methods, rotation=30, ha="right")
        ax.set_title(panel if panel not in axes_names else f"{panel}: regret ({g.metric.upper()})")
        ax.axhline(0, color="0.5", lw=0.8)
        if len(parts) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)


# ------------------------------------------------------------------------------- task-based image quality
def _shade_unseen(ax, seen: pd.Series) -> None:
    for dose, s in seen.items():
        if not s:
            ax.axvspan(dose / 1.12, dose * 1.12, color="0.88", zorder=0)


def iq_dprime(iq: pd.DataFrame, path: Path) -> list[Path]:
    """CHO d' vs dose per method, one panel per disk, with 95 % CIs; unseen doses shaded; full-dose FBP dashed."""
    from ..data.iq_phantom import DISKS
    from ..results import FULL_DOSE

    sub = iq[iq["metric"] == "cho_dprime"]
    low = sub[sub["dose"] < 1.0]
    seen = low.groupby("dose")["seen_dose"].all()
    methods = list(dict.fromkeys(low["method"]))
    colours = dict(zip(methods, sns.color_palette(n_colors=len(methods))))
    fig, axes = plt.subplots(1, len(DISKS), figsize=(3.6 * len(DISKS), 3.4), squeeze=False)
    for ax, disk in zip(axes[0], DISKS):
        d = low[low["target"] == disk.name]
        _shade_unseen(ax, seen)
        for i, m in enumerate(methods):
            r = d[d["method"] == m].sort_values("dose")
            x = r["dose"] * 1.03 ** (i - (len(methods) - 1) / 2)  # side by side, so the CIs stay readable
            ax.errorbar(x, r["value"], yerr=[r["value"] - r["ci_low"], r["ci_high"] - r["value"]], marker="o",
                        ms=4, capsize=2, color=colours[m], label=m)
        full = sub[(sub["target"] == disk.name) & sub["method"].str.startswith(FULL_DOSE)]
        for v in full["value"].unique():
            ax.axhline(v, ls="--", color="0.4", lw=1, label="full-dose FBP")
        ax.set_xscale("log")
        ax.set_xticks(sorted(seen.index), [dose_label(x) for x in sorted(seen.index)])
        ax.minorticks_off()
        ax.set_title(f"disk {disk.name}")
        ax.set_xlabel("dose (shaded: unseen)")
        ax.set_ylabel("CHO d′")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    axes[0][-1].legend(unique.values(), unique.keys(), loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    fig.tight_layout()
    return save(fig, path)


def _curve_panels(curves: pd.DataFrame, path: Path, kind: str, targets: list[str], ylabel: str, title,
                  log: bool = False) -> list[Path]:
    """Curves of `kind` per method: one row of panels per target, one column per dose; full-dose FBP dashed."""
    from ..results import FULL_DOSE

    sub = curves[curves["kind"] == kind]
    full = sub[sub["method"].str.startswith(FULL_DOSE)]
    low = sub[sub["dose"] < 1.0]
    doses = sorted(low["dose"].unique())
    methods = list(dict.fromkeys(low["method"]))
    colours = dict(zip(methods, sns.color_palette(n_colors=len(methods))))
    fig, axes = plt.subplots(len(targets), len(doses), figsize=(3.4 * len(doses), 3.0 * len(targets)), squeeze=False,
                             sharey="row")
    for i, target in enumerate(targets):
        for j, dose in enumerate(doses):
            ax = axes[i][j]
            for m in methods:
                c = low[(low["method"] == m) & (low["dose"] == dose) & (low["target"] == target)]
                ax.plot(c["frequency"], c["value"], color=colours[m], label=m)
            f = full[full["target"] == target]
            ax.plot(f["frequency"], f["value"], ls="--", color="0.3", label="full-dose FBP")
            ax.set_title(title(target, dose), fontsize=10)
            if log:
                ax.set_yscale("log")
            ax.set_xlabel("frequency (cycles/mm)")
            if j == 0:
                ax.set_ylabel(ylabel)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    axes[0][-1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    fig.tight_layout()
    return save(fig, path)


def iq_nps(curves: pd.DataFrame, path: Path) -> list[Path]:
    """Radial NPS per method at each dose, the full-dose FBP's dashed."""
    return _curve_panels(curves, path, "nps", ["uniform"], "NPS (HU² mm²)", lambda t, d: f"NPS at {dose_label(d)}",
                         log=True)


def iq_ttf(curves: pd.DataFrame, path: Path) -> list[Path]:
    """TTF per method at each dose, one row per rod, the full-dose FBP's dashed."""
    from ..data.iq_phantom import RODS

    return _curve_panels(curves, path, "ttf", [r.name for r in RODS], "TTF",
                         lambda t, d: f"TTF {t} at {dose_label(d)}")
