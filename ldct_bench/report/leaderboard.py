"""Leaderboards from the results store: methods x (anatomy, dose), each cell the mean with its patient-cluster
bootstrap CI, best and second marked, differences from the best tested per patient, and what each method cost.

A leaderboard is plain DataFrames of numbers plus the marks derived from them; the renderers
(Markdown, LaTeX, HTML, CSV) only format it, and every one prints the same caption: the
reference, the window, n patients, the CI method and the test, so a number is never shown
without what it means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..conventions import dose_label
from ..metrics.registry import METRICS
from ..metrics.stats import CI_METHOD, UNITS, compare_to_best, holm
from ..results import select_reference

REFERENCE_TEXT = {"full_dose": "the full-dose scan (itself noisy: the papers' convention)",
                  "truth": "the noiseless truth (simulated data only)"}
COST_COLUMNS = {"parameters": "params (M)", "training_flops": "train FLOPs", "ms_per_slice": "ms/slice"}


@dataclass
class Leaderboard:
    metric: str
    window: str
    mean: pd.DataFrame  # index: method; columns: MultiIndex (anatomy, dose)
    ci_lo: pd.DataFrame  # 95 % patient-cluster bootstrap CI of the mean
    ci_hi: pd.DataFrame
    rank: pd.DataFrame  # 1 = best per column
    p_value: pd.DataFrame  # paired test against the column's best method, Holm-corrected within the table
    n_patients: pd.Series  # per column
    seen: dict  # dose -> bool
    overall_rank: pd.Series  # mean rank over all columns
    unit: str = "patient"
    reference: str = "full_dose"
    cost: pd.DataFrame | None = None  # index: method; columns: COST_COLUMNS' keys
    unseen_anatomies: frozenset = frozenset()  # anatomies training did not see
    unseen_data: bool = False  # the scores are on a dataset training did not see
    unseen_acquisitions: frozenset = frozenset()  # acquisitions of the scores that training did not see

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric].higher_is_better if self.metric in METRICS else True

    def columns(self):
        return list(self.mean.columns)

    def column_label(self, col) -> str:
        anatomy, dose = col
        held_out = "" if anatomy not in self.unseen_anatomies else (
            " (with unseen anatomies)" if anatomy == "all" else " (unseen anatomy)")
        return f"{anatomy}{held_out} {dose_label(dose)}{'' if self.seen[dose] else ' (unseen)'}"

    def caption(self) -> str:
        """What every number of the table means: reference, window, n, CI, test, marks."""
        lo, hi = int(self.n_patients.min()), int(self.n_patients.max())
        n = f"{lo}" if lo == hi else f"{lo}-{hi}"
        arrow = "higher is better" if self.higher_is_better else "lower is better"
        cost = "; cost: parameters, training FLOPs, inference ms per slice" if self.cost is not None else ""
        return (f"{self.metric.upper()} ({arrow}) against {REFERENCE_TEXT.get(self.reference, self.reference)}, "
                f"window {self.window}. Mean over test slices [{CI_METHOD}]; n = {n} patients per cell. "
                f"Best in bold, second underlined; † differs from the best ({UNITS[self.unit]}, Holm-corrected "
                f"within this table, p < 0.05). Unseen: not seen in training"
                f"{'; every column is on a dataset training did not see' if self.unseen_data else ''}"
                + (f"; acquired as {', '.join(sorted(self.unseen_acquisitions))}, which training did not see"
                   if self.unseen_acquisitions else "") + f"{cost}.")

    def cost_cells(self, method) -> list[str]:
        if self.cost is None:
            return []
        row = self.cost.loc[method] if method in self.cost.index else pd.Series(dtype=float)
        return [_cost_text(key, row.get(key, np.nan)) for key in COST_COLUMNS]

    def cost_header(self) -> list[str]:
        return list(COST_COLUMNS.values()) if self.cost is not None else []


def _cost_text(key: str, value) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    return {"parameters": f"{value / 1e6:.2f}", "training_flops": f"{value:.2g}" if value else "0",
            "ms_per_slice": f"{value:.0f}"}[key]


def build_leaderboard(table: pd.DataFrame, metric: str = "psnr", window: str = "founddiff",
                      reference: str = "full_dose", unit: str = "patient", cost: pd.DataFrame | None = None,
                      pool_anatomies: bool = False) -> Leaderboard:
    """The leaderboard of `metric` in `window` against `reference`; pool_anatomies=True gives one column per dose
    over every anatomy (patients counted per anatomy)."""
    sub = select_reference(table, reference)
    sub = sub[(sub["metric"] == metric) & (sub["window"] == window)]
    if sub.empty:
        have = sorted(set(zip(table["metric"], table["window"])))
        raise ValueError(f"no {metric!r} scores in window {window!r} in these results; they have {have[:8]}.")
    if pool_anatomies:
        sub = sub.assign(patient=sub["anatomy"] + "/" + sub["patient"].astype(str), anatomy="all")
    hib = METRICS[metric].higher_is_better if metric in METRICS else True
    cmp = compare_to_best(sub, {metric: hib}, unit)
    cmp["p_vs_best"] = holm(cmp["p_vs_best"].where(cmp["method"] != cmp["best"]))
    wide = {k: cmp.pivot_table(index="method", columns=["anatomy", "dose"], values=k, dropna=False)
            for k in ("mean", "ci_lo", "ci_hi", "rank", "p_vs_best")}
    n_patients = cmp.groupby(["anatomy", "dose"])["n_patients"].max()
    seen = sub.groupby("dose")["seen_dose"].all().to_dict()
    # anatomies grouped, each in dose order (held-out doses are marked where they fall, not moved aside)
    order = sorted(wide["mean"].columns, key=lambda c: (c[0], c[1]))
    wide = {k: f.reindex(columns=order) for k, f in wide.items()}
    overall = wide["rank"].mean(axis=1).sort_values()
    wide = {k: f.loc[overall.index] for k, f in wide.items()}
    return Leaderboard(metric, window, wide["mean"], wide["ci_lo"], wide["ci_hi"], wide["rank"], wide["p_vs_best"],
                       n_patients.reindex(order), seen, overall, unit, reference, cost,
                       frozenset(sub.loc[~sub["seen_anatomy"], "anatomy"]), not sub["seen_data"].all(),
                       frozenset(sub.loc[~sub["seen_acquisition"], "acquisition"]))


def cost_table(manifests: dict[str, dict], table: pd.DataFrame, labelled: bool) -> pd.DataFrame:
    """Per method (labelled 'method [run]' when several runs are shown): parameters, training FLOPs of its
    checkpoint and inference milliseconds per slice, from the run manifests."""
    rows = {}
    for run, manifest in manifests.items():
        for name, info in manifest.get("methods", {}).items():
            label = f"{name} [{run}]" if labelled else name
            mine = table[(table["method"] == label) & (table["run"] == run)] if "run" in table else table[:0]
            slices = len(mine.drop_duplicates(["anatomy", "dose", "patient", "slice"]))
            seconds = manifest.get("timings", {}).get(f"{name}.denoise_s")
            # a method that learns nothing (the input, the filters) costs nothing to train
            untrained = 0.0 if info.get("learned") is False or not info.get("config") else np.nan
            rows[label] = {"parameters": info.get("parameters", np.nan),
                           "training_flops": info.get("training", {}).get("training_flops", untrained),
                           "ms_per_slice": 1000 * seconds / slices if seconds is not None and slices else np.nan}
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(COST_COLUMNS))


def _cells(lb: Leaderboard, fmt: str, bold, under, sig) -> list[list[str]]:
    rows = []
    for m in lb.mean.index:
        row = [m]
        for c in lb.columns():
            v, lo, hi, r, p = (f.at[m, c] for f in (lb.mean, lb.ci_lo, lb.ci_hi, lb.rank, lb.p_value))
            text = f"{number(fmt, v)} [{number(fmt, lo)}, {number(fmt, hi)}]" if np.isfinite(v) else MISSING
            if r == 1:
                text = bold(text)
            elif r == 2:
                text = under(text)
            if r != 1 and p < 0.05:
                text += sig
            row.append(text)
        row.append(number("{:.2f}", lb.overall_rank[m]))
        rows.append(row + lb.cost_cells(m))
    return rows


FORMAT = {"psnr": "{:.2f}", "ssim": "{:.4f}", "rmse": "{:.1f}"}
MISSING = "–"  # a score that is NaN (or a cell a method was not scored in)


def number(fmt: str, value) -> str:
    """`value` in `fmt`, or MISSING where it is not a finite number."""
    return fmt.format(value) if value is not None and np.isfinite(value) else MISSING


def to_markdown(lb: Leaderboard) -> str:
    fmt = FORMAT.get(lb.metric, "{:.4f}")
    head = ["method", *[lb.column_label(c) for c in lb.columns()], "mean rank", *lb.cost_header()]
    rows = _cells(lb, fmt, lambda t: f"**{t}**", lambda t: f"<u>{t}</u>", "†")
    rows = [[md_escape(r[0]), *r[1:]] for r in rows]
    head = [md_escape(h) for h in head]
    lines = [lb.caption(), "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def md_escape(s: str) -> str:
    """Free text (a method or anatomy name) as one Markdown table cell: no column breaks, no raw HTML."""
    return str(s).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _tex_escape(s: str) -> str:
    out = str(s)
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"), ("_", r"\_"),
                 ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\textasciicircum{}")):
        out = out.replace(a, b) if a != "\\" else out.replace(a, "\x00")
    return out.replace("\x00", r"\textbackslash{}")


def to_latex(lb: Leaderboard, caption: str | None = None) -> str:
    """A booktabs table that compiles as-is (needs \\usepackage{booktabs,graphicx}): anatomies grouped over their
    doses in a two-row header, scaled to the line width because a dose x anatomy matrix is wide."""
    fmt = FORMAT.get(lb.metric, "{:.4f}")
    rows = _cells(lb, fmt, lambda t: rf"\textbf{{{t}}}", lambda t: rf"\underline{{{t}}}", r"$^\dagger$")
    rows = [[_tex_escape(r[0]), *(c.replace("–", "--") for c in r[1:])] for r in rows]
    cols = lb.columns()
    spec = "l" + "c" * len(cols) + "r" + "r" * len(lb.cost_header())
    cap = caption or (_tex_escape(lb.caption()).replace("†", r"$^\dagger$")
                      + r" Doses marked * were not seen in training; images clipped to the window, "
                        "data range = window width.")
    groups, rules = [], []  # the consecutive columns of one anatomy
    for i, (anatomy, _) in enumerate(cols):
        if groups and groups[-1][0] == (anatomy,):
            groups[-1][1] += 1
        else:
            groups.append([(anatomy,), 1, i + 2])
    top = ["", *(rf"\multicolumn{{{n}}}{{c}}{{{_tex_escape(key[0])}}}" for key, n, _ in groups), "",
           *[""] * len(lb.cost_header())]
    rules = " ".join(rf"\cmidrule(lr){{{first}-{first + n - 1}}}" for _, n, first in groups)
    head = ["Method", *[_tex_escape(dose_label(c[1]) + ("" if lb.seen[c[1]] else "*")) for c in cols], "Rank",
            *[_tex_escape(h) for h in lb.cost_header()]]
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{cap}}}", r"\resizebox{\linewidth}{!}{%",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(top) + r" \\", rules, " & ".join(head) + r" \\",
             r"\midrule"]
    lines += [" & ".join(r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_frame(lb: Leaderboard) -> pd.DataFrame:
    """Long form for CSV: one row per (method, anatomy, dose), with the method's cost where known."""
    out = []
    for m in lb.mean.index:
        cost = lb.cost.loc[m].to_dict() if lb.cost is not None and m in lb.cost.index else {}
        for c in lb.columns():
            if pd.isna(lb.mean.at[m, c]):
                continue  # not scored there (several runs: each method has only its own run's cells)
            out.append({"metric": lb.metric, "window": lb.window, "reference": lb.reference, "method": m,
                        "anatomy": c[0], "dose": c[1], "seen_dose": lb.seen[c[1]],
                        "seen_anatomy": c[0] not in lb.unseen_anatomies, "seen_data": not lb.unseen_data,
                        "mean": lb.mean.at[m, c],
                        "ci_lo": lb.ci_lo.at[m, c], "ci_hi": lb.ci_hi.at[m, c], "n_patients": int(lb.n_patients[c]),
                        "rank": lb.rank.at[m, c], "p_vs_best_holm": lb.p_value.at[m, c], "test": UNITS[lb.unit],
                        "overall_rank": lb.overall_rank[m], **cost})
    return pd.DataFrame(out)


def summary_text(table: pd.DataFrame, window: str = "founddiff") -> str:
    """The terminal leaderboard `ldct-bench run` prints: mean PSNR / SSIM / RMSE per method and dose (over all
    anatomies, against the full dose), seen doses marked."""
    sub = select_reference(table, "full_dose")
    sub = sub[sub["window"] == window]
    if sub.empty:
        return "(no rows)"
    piv = sub.pivot_table(index="method", columns=["metric", "dose"], values="value", aggfunc="mean")
    seen = sub.groupby("dose")["seen_dose"].all()
    lines = [f"window: {window}  (* = dose seen in training)"]
    for metric, fmt in (("psnr", "{:7.2f}"), ("ssim", "{:7.4f}"), ("rmse", "{:7.1f}")):
        if metric not in piv.columns.get_level_values(0):
            continue
        cols = piv[metric]
        head = f"{metric.upper():10s}" + "".join(f"{dose_label(d) + ('*' if seen[d] else ''):>9s}" for d in cols.columns)
        lines.append(head)
        for m in cols.index:
            lines.append(f"  {m:8s}" + "".join(f"  {number(fmt, v):>7s}" for v in cols.loc[m]))
    return "\n".join(lines)
