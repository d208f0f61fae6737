"""Leaderboards from the results store: methods x (anatomy, dose), mean +- std, best and second marked.

A leaderboard is a plain DataFrame of numbers plus the marks derived from them; the
renderers (Markdown, LaTeX, HTML, CSV) only format it, so every format shows the same
numbers and the tests can check them against a direct pandas aggregation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..conventions import dose_label
from ..metrics.registry import METRICS
from ..metrics.stats import compare_to_best


@dataclass
class Leaderboard:
    metric: str
    window: str
    mean: pd.DataFrame  # index: method; columns: MultiIndex (anatomy, dose)
    std: pd.DataFrame
    rank: pd.DataFrame  # 1 = best per column
    p_value: pd.DataFrame  # Wilcoxon signed-rank against the column's best method
    seen: dict  # dose -> bool
    overall_rank: pd.Series  # mean rank over all columns

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric].higher_is_better if self.metric in METRICS else True

    def columns(self):
        return list(self.mean.columns)

    def column_label(self, col) -> str:
        anatomy, dose = col
        return f"{anatomy} {dose_label(dose)}{'' if self.seen[dose] else ' (unseen)'}"


def build_leaderboard(table: pd.DataFrame, metric: str = "psnr", window: str = "founddiff") -> Leaderboard:
    sub = table[(table["metric"] == metric) & (table["window"] == window)]
    if sub.empty:
        have = sorted(set(zip(table["metric"], table["window"])))
        raise ValueError(f"no {metric!r} scores in window {window!r} in these results; they have {have[:8]}.")
    hib = METRICS[metric].higher_is_better if metric in METRICS else True
    g = sub.groupby(["method", "anatomy", "dose"], observed=True)["value"]
    mean = g.mean().unstack(["anatomy", "dose"]).sort_index(axis=1)
    std = g.std().unstack(["anatomy", "dose"]).reindex(columns=mean.columns)
    cmp = compare_to_best(sub, {metric: hib})
    rank = cmp.pivot_table(index="method", columns=["anatomy", "dose"], values="rank").reindex_like(mean)
    p = cmp.pivot_table(index="method", columns=["anatomy", "dose"], values="p_vs_best").reindex_like(mean)
    seen = sub.groupby("dose")["seen"].first().to_dict()
    # seen doses first, then the held-out ones, each by dose; anatomies grouped
    order = sorted(mean.columns, key=lambda c: (not seen[c[1]], c[0], c[1]))
    mean, std, rank, p = (f[order] for f in (mean, std, rank, p))
    overall = rank.mean(axis=1).sort_values()
    return Leaderboard(metric, window, mean.loc[overall.index], std.loc[overall.index], rank.loc[overall.index],
                       p.loc[overall.index], seen, overall)


def _cells(lb: Leaderboard, fmt: str, bold, under, sig) -> list[list[str]]:
    rows = []
    for m in lb.mean.index:
        row = [m]
        for c in lb.columns():
            v, s, r, p = lb.mean.at[m, c], lb.std.at[m, c], lb.rank.at[m, c], lb.p_value.at[m, c]
            text = f"{fmt.format(v)} ± {fmt.format(s)}" if np.isfinite(s) else fmt.format(v)
            if r == 1:
                text = bold(text)
            elif r == 2:
                text = under(text)
            if r != 1 and p < 0.05:
                text += sig
            row.append(text)
        row.append(f"{lb.overall_rank[m]:.2f}")
        rows.append(row)
    return rows


FORMAT = {"psnr": "{:.2f}", "ssim": "{:.4f}", "rmse": "{:.1f}"}


def to_markdown(lb: Leaderboard) -> str:
    fmt = FORMAT.get(lb.metric, "{:.4f}")
    head = ["method", *[lb.column_label(c) for c in lb.columns()], "mean rank"]
    rows = _cells(lb, fmt, lambda t: f"**{t}**", lambda t: f"<u>{t}</u>", "†")
    arrow = "↑" if lb.higher_is_better else "↓"
    lines = [f"**{lb.metric.upper()} {arrow}** (window `{lb.window}`; mean ± std over test slices; **best**, "
             "<u>second</u>; † differs from the best, Wilcoxon signed-rank p < 0.05)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


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
    rows = [[_tex_escape(r[0]), *(c.replace("±", r"$\pm$") for c in r[1:])] for r in rows]
    cols = lb.columns()
    n_seen = sum(lb.seen[c[1]] for c in cols)
    spec = "l" + "c" * n_seen + ("|" if 0 < n_seen < len(cols) else "") + "c" * (len(cols) - n_seen) + "r"
    arrow = r"$\uparrow$" if lb.higher_is_better else r"$\downarrow$"
    cap = caption or (f"{lb.metric.upper()} {arrow} per anatomy and dose, mean $\\pm$ std over test slices, computed in "
                      f"the {_tex_escape(lb.window)} window (images clipped to the window, data range = window width). "
                      r"Best in bold, second underlined; $^\dagger$: differs from the best (Wilcoxon, $p<0.05$). "
                      "Doses right of the rule (*) were not seen in training.")
    groups, rules = [], []  # consecutive columns of one anatomy on one side of the seen/unseen rule
    for i, (anatomy, dose) in enumerate(cols):
        if groups and groups[-1][0] == (anatomy, lb.seen[dose]):
            groups[-1][1] += 1
        else:
            groups.append([(anatomy, lb.seen[dose]), 1, i + 2])
    top = ["", *(rf"\multicolumn{{{n}}}{{c}}{{{_tex_escape(key[0])}}}" for key, n, _ in groups), ""]
    rules = " ".join(rf"\cmidrule(lr){{{first}-{first + n - 1}}}" for _, n, first in groups)
    head = ["Method", *[_tex_escape(dose_label(c[1]) + ("" if lb.seen[c[1]] else "*")) for c in cols], "Rank"]
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{cap}}}", r"\resizebox{\linewidth}{!}{%",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(top) + r" \\", rules, " & ".join(head) + r" \\",
             r"\midrule"]
    lines += [" & ".join(r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_frame(lb: Leaderboard) -> pd.DataFrame:
    """Long form for CSV: one row per (method, anatomy, dose)."""
    out = []
    for m in lb.mean.index:
        for c in lb.columns():
            out.append({"metric": lb.metric, "window": lb.window, "method": m, "anatomy": c[0], "dose": c[1],
                        "seen": lb.seen[c[1]], "mean": lb.mean.at[m, c], "std": lb.std.at[m, c],
                        "rank": int(lb.rank.at[m, c]), "p_vs_best": lb.p_value.at[m, c],
                        "overall_rank": lb.overall_rank[m]})
    return pd.DataFrame(out)


def summary_text(table: pd.DataFrame, window: str = "founddiff") -> str:
    """The terminal leaderboard `ldct-bench run` prints: mean PSNR / SSIM / RMSE per method and dose (over all
    anatomies), seen doses marked."""
    sub = table[table["window"] == window]
    if sub.empty:
        return "(no rows)"
    piv = sub.pivot_table(index="method", columns=["metric", "dose"], values="value", aggfunc="mean")
    seen = sub.groupby("dose")["seen"].first()
    lines = [f"window: {window}  (* = dose seen in training)"]
    for metric, fmt in (("psnr", "{:7.2f}"), ("ssim", "{:7.4f}"), ("rmse", "{:7.1f}")):
        if metric not in piv.columns.get_level_values(0):
            continue
        cols = piv[metric]
        head = f"{metric.upper():10s}" + "".join(f"{dose_label(d) + ('*' if seen[d] else ''):>9s}" for d in cols.columns)
        lines.append(head)
        for m in cols.index:
            lines.append(f"  {m:8s}" + "".join(f"  {fmt.format(v)}" for v in cols.loc[m]))
    return "\n".join(lines)
