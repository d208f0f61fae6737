"""Reports from results stores: leaderboards (Markdown, LaTeX, HTML, CSV) and figures. Reads only the store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_write_text
from ..conventions import safe, specialist_of
from ..environment import git_commit, versions
from ..results import RunStore
from . import compute, figures, task
from . import generalization as gen
from .html import page
from .leaderboard import build_leaderboard, cost_table, to_frame, to_latex, to_markdown

FORMATS = ("html", "latex", "csv", "md")


def png(stem: Path) -> Path:
    """The PNG that figures.save wrote for `stem`."""
    return stem.parent / f"{stem.name}.png"


def inside(out: Path, path: Path) -> Path:
    """`path`, once it is known to lie inside `out` (a report never writes elsewhere, whatever the store holds)."""
    if not path.resolve().is_relative_to(Path(out).resolve()):
        raise ValueError(f"refusing to write {path}: it lies outside the report folder {out}.")
    return path


def load_runs(run_dirs: list[Path], reference: str = "full_dose") -> tuple[pd.DataFrame, dict[str, dict], list[RunStore]]:
    """Concatenate the scores of several runs against `reference`, each run under its own label (run_labels)."""
    stores = [RunStore(d) for d in run_dirs]
    tables, manifests = [], {}
    for st, label in zip(stores, run_labels(stores)):
        manifests[label] = st.read_manifest()
        tables.append(st.table(reference).assign(run=label))
    return pd.concat(tables, ignore_index=True), manifests, stores


def with_pixel_mm(runs: pd.DataFrame, manifests: dict[str, dict]) -> pd.DataFrame:
    """`runs` with each row's pixel size (mm) from its run's manifest (one value, or one per imported patient;
    NaN where an older run did not record it)."""
    def pixel(run, patient):
        recorded = manifests.get(run, {}).get("dataset", {}).get("pixel_mm")
        value = recorded.get(str(patient)) if isinstance(recorded, dict) else recorded
        return float(value) if isinstance(value, (int, float)) else np.nan

    pairs = runs[["run", "patient"]].drop_duplicates()
    sizes = {(r, p): pixel(r, p) for r, p in pairs.itertuples(index=False)}
    return runs.assign(pixel_mm=[sizes[k] for k in zip(runs["run"], runs["patient"])])


def _pixel_mm(manifests: dict[str, dict]) -> float | None:
    """The image-quality phantom's pixel size (mm), from the first run that scored it."""
    from ..data.iq_phantom import IQConfig

    made = [m["iq"]["config"] for m in manifests.values() if "iq" in m]
    return IQConfig(**made[0]).geometry.pixel_mm if made else None


def run_labels(stores: list[RunStore]) -> list[str]:
    """One distinct label per run: its folder name, with as many parent folders as it takes to tell runs apart
    (A/run1 and B/run1), and a counter for the same folder given twice."""
    for depth in range(1, 1 + max(len(st.root.resolve().parts) for st in stores)):
        labels = ["/".join(st.root.resolve().parts[-depth:]) for st in stores]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{st.name} #{i + 1}" for i, st in enumerate(stores)]


def make_report(run_dirs: list[Path], out: Path, formats=FORMATS, metrics=("psnr", "ssim", "rmse"),
                window: str = "founddiff", reference: str = "full_dose", unit: str = "patient",
                draw: bool = True) -> list[Path]:
    """Write leaderboards (per anatomy and dose, and per dose over all anatomies) and figures for `run_dirs` into
    `out`, every score against `reference`, tests with `unit` as the statistical unit; returns the files written.
    draw=False writes the tables alone (the documentation remakes a committed report's tables in seconds)."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown report format {', '.join(bad)}; choose from {', '.join(FORMATS)}.")
    runs, manifests, stores = load_runs([Path(d) for d in run_dirs], reference)
    iq = task.load_iq(stores, list(manifests))  # task-based image quality, where a run has it (--iq)
    tasks = task.task_tables(iq[0], _pixel_mm(manifests)) if iq else None
    # --oracle specialists are yardsticks of the generalization table, not contestants of the leaderboards
    table = runs[runs["method"].map(specialist_of).isna()]
    if len(stores) > 1:
        table = table.assign(method=table["method"] + " [" + table["run"] + "]")
    cost = cost_table(manifests, table, labelled=len(stores) > 1)
    boards = [build_leaderboard(table, m, window, reference, unit, cost) for m in metrics]
    by_dose = [build_leaderboard(table, m, window, reference, unit, cost, pool_anatomies=True) for m in metrics]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def write(name: str, text: str):
        atomic_write_text(inside(out, out / name), text)
        written.append(out / name)

    def figure(stem: str) -> Path:
        """A figure's path (without suffix) for a name built from table values: one safe component under figures/."""
        return inside(out, fig_dir / safe(stem))

    # generalization compares each method with itself across runs (say, its training data and another dataset)
    general = gen.generalization(runs, metrics[0], window, reference)
    if general.table.empty:  # nothing held out of training: nothing to say about generalization
        general = None
    # rankings at equal compute (one run: its methods' curves share one validation split)
    equal = compute.equal_compute(manifests, boards[0].overall_rank) if len(stores) == 1 else None
    if "md" in formats:
        write("leaderboard.md", "\n".join(to_markdown(lb) for lb in boards))
        if equal:
            write("equal_compute.md", compute.to_markdown(equal))
        write("leaderboard_by_dose.md", "\n".join(to_markdown(lb) for lb in by_dose))
        if general:
            write("generalization.md", gen.to_markdown(general))
        if tasks:
            write("task_based.md", task.to_markdown(tasks))
    if "latex" in formats:
        write("leaderboard.tex", "\n".join(to_latex(lb) for lb in boards))
        if general:
            write("generalization.tex", gen.to_latex(general))
        if tasks:
            write("task_based.tex", task.to_latex(tasks))
    if "csv" in formats:
        write("leaderboard.csv", pd.concat([to_frame(lb) for lb in boards]).to_csv(index=False))
        write("results.csv", table.to_csv(index=False))
        if general:
            write("generalization.csv", gen.to_frame(general).to_csv(index=False))
        if iq:
            write("task_based.csv", iq[0].to_csv(index=False))
    figs: list[tuple[str, Path]] = []
    fig_dir = out / "figures"
    if not draw:
        return written
    # PDF twins of the figures only where a LaTeX report will include them
    with figures.written_as(*(("png", "pdf") if "latex" in formats else ("png",))):
        for m in metrics[:2]:
            stem = figure(f"dose_curves_{m}")
            figures.dose_curves(table, stem, m, window)
            figs.append((f"{m.upper()} vs dose per method (shaded: unseen doses)", png(stem)))
        if equal:
            compute.learning_curve_figure(equal, fig_dir / "learning_curves")
            figs.append(("validation PSNR against training FLOPs and wall time (the curves of the rankings at equal "
                         "compute)", fig_dir / "learning_curves.png"))
        if general:
            figures.generalization_plot(general, fig_dir / "generalization")
            figs.append((general.caption(), fig_dir / "generalization.png"))
        if iq:
            for name, plot, data, caption in (
                    ("iq_dprime", figures.iq_dprime, iq[0],
                     "CHO d′ of the CCT189-like disks vs dose (95 % CI; shaded: unseen doses; dashed: full-dose FBP)"),
                    ("iq_nps", figures.iq_nps, iq[1], "radial noise power spectra (dashed: full-dose FBP)"),
                    ("iq_ttf", figures.iq_ttf, iq[1],
                     "task transfer functions of the bone and polystyrene rods (dashed: full-dose FBP)")):
                plot(data, fig_dir / name)
                figs.append((caption, fig_dir / f"{name}.png"))
        sized = with_pixel_mm(runs, manifests)
        compared = "ldct" in set(runs["method"]) and len(set(runs["method"]) - {"ldct"}) > 0
        if compared and sized["pixel_mm"].round(3).nunique() > 1:  # several pixel sizes: the acquisition shift
            figures.gain_vs_pixel(sized[sized["value"].notna()], fig_dir / "gain_vs_pixel", metrics[0], window)
            figs.append((f"{metrics[0].upper()} gain over the input against pixel size, per dose (mean over slices)",
                         fig_dir / "gain_vs_pixel.png"))
        scored = table[table["value"].notna()]  # a NaN score is a '–' in the tables and no point in a figure
        if not scored[(scored["metric"] == "psnr") & (scored["window"] == window)].empty:
            figures.box_plots(scored, fig_dir / "box_psnr", "psnr", window)
            figs.append(("per-slice PSNR by anatomy, seen vs unseen doses", fig_dir / "box_psnr.png"))
        if len(stores) == 1:
            st = stores[0]
            methods = [m for m in boards[0].mean.index if m != "ldct"]
            doses = sorted(table["dose"].unique())
            for anatomy in sorted(table["anatomy"].unique()):
                stem = figure(f"grid_{anatomy}")
                figures.visual_grid(st, methods, anatomy, doses, stem)
                figs.append((f"{anatomy}: visual comparison, and |error| maps on one colour bar (its range in the "
                             "title)", png(stem)))
            perception = st.perception()
            if perception is not None:
                figures.perception_plot(perception, fig_dir / "daclip_perception")
                figs.append(("DA-CLIP: estimated vs true dose, and its dose embedding",
                             fig_dir / "daclip_perception.png"))
    written += sorted(fig_dir.glob("*"))
    if "html" in formats:
        write("report.html", page("ldct-bench report", by_dose + boards, figs, manifests, general,
                                  [task.to_html(tasks) if tasks else "", compute.to_html(equal) if equal else ""]))
    # how this report was made: which stores, which options, which code (the stores' own manifests say how they were made)
    write("report_manifest.json", json.dumps({
        "command": "ldct-bench report " + " ".join(str(d) for d in run_dirs) + f" --out {out} --format {','.join(formats)}"
                   f" --metrics {','.join(metrics)} --window {window} --reference {reference} --unit {unit}",
        "runs": {label: str(st.root) for label, st in zip(manifests, stores)},  # manifests are keyed by run label
        "git_commit": git_commit(), "versions": versions(),
        "files": sorted(str(p.relative_to(out)) for p in written)}, indent=2))
    return written
