"""How well each method generalizes, measured like with like along every axis (dose, anatomy, dataset, acquisition).

A raw gain over the input is not comparable across doses (a noisier held-out dose leaves more to gain), so
both measures here are dose-matched:

* **regret**: in each cell (run, anatomy, dose) a method's distance to the best method of that cell,
  in the metric's better direction (0 = the best); averaged over the cells training saw and over those it
  did not, along each axis that has both. Every method faces the same cells, so only how it ranks moves it.
* **interpolation**: at an unseen dose between two seen ones, the method's score minus the log-dose
  interpolation of its own scores at those neighbours (same anatomy), signed so that > 0 is better than
  its seen doses predict.
* **oracle gap** (runs made with `--oracle`): at each unseen dose, the specialist trained on that dose alone
  minus the generalist, on the same patients (> 0: what generalizing costs the method there).

Several runs are measured together (a run on the training data and one on another dataset make the
dataset axis). CIs come from a patient-cluster bootstrap: patients are resampled within their run and
anatomy, and every cell mean, best method and average is recomputed from the resample.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..conventions import dose_label, specialist_of
from ..metrics.registry import METRICS
from ..results import AXES, upgrade

N_BOOT = 1000
# a cell: one run's scores of one anatomy at one dose through one acquisition
CELL_KEYS = ["run", "seen_data", "acquisition", "seen_acquisition", "anatomy", "dose"]


@dataclass
class Generalization:
    """Per method: regret over seen and unseen cells per axis, and the interpolation residual, each with its CI."""

    metric: str
    window: str
    reference: str
    table: pd.DataFrame  # index: method; columns: (measure, statistic) with statistic in mean/lo/hi
    n_patients: int

    def caption(self) -> str:
        better = "higher" if METRICS.get(self.metric) is None or METRICS[self.metric].higher_is_better else "lower"
        return (f"Generalization in {self.metric.upper()} ({better} is better), window {self.window}, against "
                f"{self.reference.replace('_', ' ')}. Regret: distance to the best method of the same cell (0 = best), "
                "averaged over the cells training saw and over those it did not, per axis; interpolation: score at "
                "an unseen dose between seen ones minus the log-dose interpolation of the method's own seen "
                f"neighbours (> 0: better than predicted)"
                + ("; oracle gap: specialist trained on that dose alone minus the generalist (> 0: what generalizing "
                   "costs)" if any(c[0].startswith("oracle gap") for c in self.table.columns) else "")
                + f". Mean [95 % patient-cluster bootstrap CI, {N_BOOT} "
                f"resamples within run and anatomy]; n = {self.n_patients} patients.")


def generalization(table: pd.DataFrame, metric: str = "psnr", window: str = "founddiff",
                   reference: str = "full_dose") -> Generalization:
    """The generalization measures of `table` (one reference's scores; see the module docstring)."""
    table = upgrade(table)
    sub = table[(table["metric"] == metric) & (table["window"] == window) & (table["reference"] == reference)]
    if sub.empty:
        raise ValueError(f"no {metric!r} scores in window {window!r} against {reference!r} to measure generalization.")
    sign = 1.0 if metric not in METRICS or METRICS[metric].higher_is_better else -1.0
    sub = sub.assign(unit=sub["run"].astype(str) + "/" + sub["anatomy"] + "/" + sub["patient"].astype(str))
    per_patient = sub.groupby(["method", *CELL_KEYS, "unit"], observed=True)["value"].mean()
    cube = per_patient.unstack("unit")  # rows (method, cell), columns patients
    labels = list(cube.index.get_level_values("method").unique())
    methods = [m for m in labels if specialist_of(m) is None]  # specialists are yardsticks, not contestants
    generalists = sub[sub["method"].isin(methods)]
    cells = pd.MultiIndex.from_frame(generalists[CELL_KEYS].drop_duplicates().sort_values(CELL_KEYS))
    values = np.stack([cube.loc[m].reindex(cells).to_numpy() for m in labels])  # (labels, cells, units); NaN: not run
    weights = _bootstrap_weights(list(cube.columns), N_BOOT)  # (1 + N_BOOT, units); row 0: the sample itself
    present = np.isfinite(values).any(axis=0)
    means = np.einsum("mcu,bu->bmc", np.nan_to_num(values), weights) / np.einsum("cu,bu->bc", present, weights)[:, None]
    means[:, ~np.isfinite(values).any(axis=2)] = np.nan  # a method not run in a cell has no score there
    flags = generalists.drop_duplicates(CELL_KEYS).set_index(CELL_KEYS, drop=False)[list(AXES.values())].reindex(cells)
    columns = {}
    everyone = sign * means  # higher is better; (boot, labels, cells)
    score = everyone[:, [labels.index(m) for m in methods]]
    regret = np.nanmax(score, axis=1, keepdims=True) - score  # (boot, methods, cells), 0 for the cell's best
    for axis, flag in AXES.items():
        seen = flags[flag].to_numpy(dtype=bool)
        if seen.all() or not seen.any():
            continue  # this axis was not held out (or nothing of it was seen): nothing to compare
        for label, mask in (("seen", seen), ("unseen", ~seen)):
            columns[(f"{axis} regret, {label}", "")] = np.nanmean(regret[:, :, mask], axis=2)
    interp = _interpolation(score, cells, flags)
    if interp is not None:
        columns[("dose interpolation", "")] = interp
    columns.update(_oracle_gaps(everyone, labels, methods, cells))
    rows = {}
    for (name, _), boot in columns.items():
        with warnings.catch_warnings():  # a method without this measure (no specialist) is all NaN: a dash
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanquantile(boot[1:], [0.025, 0.975], axis=0)
        for i, m in enumerate(methods):
            rows.setdefault(m, {}).update({(name, "mean"): boot[0, i], (name, "lo"): lo[i], (name, "hi"): hi[i]})
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.columns = pd.MultiIndex.from_tuples(frame.columns) if rows else pd.MultiIndex.from_tuples([], names=[None, None])
    return Generalization(metric, window, reference, frame, int(len(cube.columns)))


def _oracle_gaps(everyone: np.ndarray, labels: list[str], methods: list[str], cells: pd.MultiIndex) -> dict:
    """{(f'oracle gap at {dose}', ''): (boot, methods)}: specialist minus generalist averaged over the cells of
    that dose (NaN for a method without a specialist there)."""
    doses = cells.get_level_values("dose").to_numpy()
    by_dose: dict[float, np.ndarray] = {}
    for i, label in enumerate(labels):
        general = specialist_of(label)
        if general not in methods:
            continue
        there = np.isfinite(everyone[0, i])  # the specialist's cells: its one dose
        for dose in set(doses[there]):
            mask = there & (doses == dose)
            gap = by_dose.setdefault(dose, np.full((everyone.shape[0], len(methods)), np.nan))
            gap[:, methods.index(general)] = np.nanmean(
                everyone[:, i][:, mask] - everyone[:, labels.index(general)][:, mask], axis=1)
    return {(f"oracle gap at {dose_label(dose)}", ""): by_dose[dose] for dose in sorted(by_dose)}


def _bootstrap_weights(units: list[str], n_boot: int, seed: int = 0) -> np.ndarray:
    """How often each patient is drawn: row 0 once each (the sample), then `n_boot` resamples of every stratum
    (dataset and anatomy) with replacement."""
    rng = np.random.default_rng(seed)
    strata = pd.Series(units).str.rsplit("/", n=1).str[0]
    weights = np.ones((1 + n_boot, len(units)))
    for _, idx in strata.groupby(strata).groups.items():
        idx = np.asarray(idx)
        weights[1:, idx] = rng.multinomial(len(idx), np.full(len(idx), 1 / len(idx)), size=n_boot)
    return weights


def _interpolation(score: np.ndarray, cells: pd.MultiIndex, flags: pd.DataFrame) -> np.ndarray | None:
    """(boot, methods) mean over (dataset, anatomy, unseen dose between seen ones) of score minus the log-dose
    interpolation of the neighbouring seen doses; None when no unseen dose lies between seen ones."""
    residuals = []
    frame = pd.DataFrame({"i": range(len(cells)), "seen": flags["seen_dose"].to_numpy()}, index=cells)
    for _, group in frame.groupby(level=["run", "anatomy"]):
        doses = group.index.get_level_values("dose").to_numpy()
        seen = group["seen"].to_numpy()
        for k in np.flatnonzero(~seen):
            below = [j for j in np.flatnonzero(seen) if doses[j] < doses[k]]
            above = [j for j in np.flatnonzero(seen) if doses[j] > doses[k]]
            if not below or not above:
                continue
            lo, hi = max(below, key=lambda j: doses[j]), min(above, key=lambda j: doses[j])
            t = (np.log(doses[k]) - np.log(doses[lo])) / (np.log(doses[hi]) - np.log(doses[lo]))
            i_lo, i_hi, i_k = (group["i"].iloc[j] for j in (lo, hi, k))
            residuals.append(score[:, :, i_k] - ((1 - t) * score[:, :, i_lo] + t * score[:, :, i_hi]))
    return np.nanmean(residuals, axis=0) if residuals else None


def _cell(row: pd.Series, measure: str, fmt: str) -> str:
    """'mean [lo, hi]', or a dash where the method has no such measure (no specialist, say)."""
    if not np.isfinite(row[(measure, "mean")]):
        return "–"
    return f"{fmt.format(row[(measure, 'mean')])} [{fmt.format(row[(measure, 'lo')])}, {fmt.format(row[(measure, 'hi')])}]"


def to_markdown(g: Generalization, fmt: str = "{:.2f}") -> str:
    from .leaderboard import md_escape

    measures = list(dict.fromkeys(c[0] for c in g.table.columns))
    lines = [g.caption(), "", "| method | " + " | ".join(measures) + " |", "|---|" + "---|" * len(measures)]
    for m, row in g.table.iterrows():
        lines.append(f"| {md_escape(m)} | " + " | ".join(_cell(row, k, fmt) for k in measures) + " |")
    return "\n".join(lines) + "\n"


def to_frame(g: Generalization) -> pd.DataFrame:
    """Long form for CSV: one row per (method, measure)."""
    rows = [{"metric": g.metric, "window": g.window, "reference": g.reference, "method": m, "measure": k,
             "mean": row[(k, "mean")], "ci_lo": row[(k, "lo")], "ci_hi": row[(k, "hi")], "n_patients": g.n_patients}
            for m, row in g.table.iterrows() for k in dict.fromkeys(c[0] for c in g.table.columns)]
    return pd.DataFrame(rows)


def to_latex(g: Generalization, fmt: str = "{:.2f}") -> str:
    """A booktabs table (\\usepackage{booktabs}) of the same numbers."""
    from .leaderboard import _tex_escape

    measures = list(dict.fromkeys(c[0] for c in g.table.columns))
    rows = [" & ".join([_tex_escape(m), *(_cell(r, k, fmt) for k in measures)]) + r" \\"
            for m, r in g.table.iterrows()]
    return "\n".join([r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex_escape(g.caption())}}}",
                      rf"\begin{{tabular}}{{l{'c' * len(measures)}}}", r"\toprule",
                      " & ".join(["Method", *(_tex_escape(k) for k in measures)]) + r" \\", r"\midrule", *rows,
                      r"\bottomrule", r"\end{tabular}", r"\end{table}"]) + "\n"


def to_html(g: Generalization, fmt: str = "{:.2f}") -> str:
    import html

    measures = list(dict.fromkeys(c[0] for c in g.table.columns))
    head = "".join(f"<th>{html.escape(k)}</th>" for k in measures)
    body = "".join(
        f"<tr><td>{html.escape(str(m))}</td>" + "".join(
            f'<td data-v="{r[(k, "mean")]:.6g}">{html.escape(_cell(r, k, fmt))}</td>' for k in measures) + "</tr>"
        for m, r in g.table.iterrows())
    return (f"<h3>Generalization</h3><p>{html.escape(g.caption())}</p><div class='scroll'><table class='sortable'>"
            f"<thead><tr><th>method</th>{head}</tr></thead><tbody>{body}</tbody></table></div>")
