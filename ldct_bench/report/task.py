"""The task-based tables of a report (runs made with --iq): detectability per disk, and noise texture and
resolution, per method and dose, with the full-dose FBP as the first row. Reads only the stores' iq tables."""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..conventions import dose_label
from ..data.iq_phantom import DISKS, RODS
from ..results import FULL_DOSE, RunStore
from .leaderboard import _tex_escape, md_escape

TEXTURE = [("uniform", "nps_noise", "noise (HU)", "{:.1f}"), ("uniform", "nps_fpeak", "f_peak", "{:.3f}"),
           ("uniform", "nps_fmean", "f_mean", "{:.3f}"), ("uniform", "nps_fmean_shift", "Δf_mean", "{:+.3f}")]
RESOLUTION = [(rod.name, m, f"{m.upper()} {rod.name.split('/')[0]}", "{:.3f}") for rod in RODS for m in ("ttf50", "ttf10")]


@dataclass
class TaskTable:
    """One table: rows (method, dose, seen) and their formatted cells, under `columns`."""

    title: str
    caption: str
    columns: list[str]
    rows: list[tuple[str, float, bool, list[str]]]

    def row_label(self, dose: float, seen: bool) -> str:
        return "full dose" if dose == 1.0 else dose_label(dose) + ("" if seen else "*")


def load_iq(stores: list[RunStore], labels: list[str]) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Every store's task-based rows and curves (methods labelled with their run when there are several)."""
    tables, curves = [], []
    for st, label in zip(stores, labels):
        t, c = st.iq_table(), st.iq_curves()
        if t is None:
            continue
        if len(stores) > 1:
            t, c = t.assign(method=t["method"] + " [" + label + "]"), c.assign(method=c["method"] + " [" + label + "]")
        tables.append(t)
        curves.append(c)
    return (pd.concat(tables, ignore_index=True), pd.concat(curves, ignore_index=True)) if tables else None


def _order(iq: pd.DataFrame) -> list[tuple[str, float, bool]]:
    """Rows: the full-dose FBP first, then each dose (ascending) with its methods in run order."""
    keys = iq[["method", "dose", "seen_dose"]].drop_duplicates()
    methods = list(dict.fromkeys(keys["method"]))
    keys = keys.assign(first=keys["method"].str.startswith(FULL_DOSE), m=keys["method"].map(methods.index))
    keys = keys.sort_values(["first", "dose", "m"], ascending=[False, True, True])
    return list(keys[["method", "dose", "seen_dose"]].itertuples(index=False, name=None))


def _value(iq: pd.DataFrame, method: str, dose: float, target: str, metric: str) -> pd.Series | None:
    hit = iq[(iq["method"] == method) & (iq["dose"] == dose) & (iq["target"] == target) & (iq["metric"] == metric)]
    return None if hit.empty else hit.iloc[0]


def _text(row: pd.Series | None, fmt: str, ci: bool) -> str:
    if row is None or not np.isfinite(row["value"]):
        return "–"
    text = fmt.format(row["value"])
    if ci and np.isfinite(row["ci_low"]):
        text += f" [{fmt.format(row['ci_low'])}, {fmt.format(row['ci_high'])}]"
    return text


def task_tables(iq: pd.DataFrame, pixel_mm: float | None = None) -> list[TaskTable]:
    """The detectability table and the noise-texture-and-resolution table (`pixel_mm` names the Nyquist frequency)."""
    n = int(iq.loc[iq["metric"] == "cho_dprime", "n"].max())
    rows = _order(iq)
    det = TaskTable(
        "Low-contrast detectability (CHO d′)",
        f"Channelized Hotelling observer (5 Laguerre-Gauss channels, signal and location known exactly) on the "
        f"CCT189-like disks; mean of 10 half/half training/test splits of {n} signal-present and {n} signal-absent "
        "realisations, 95 % CI over splits and resampled test realisations (AUC in task_based.csv). Higher is "
        "better; * dose not seen in training.",
        [f"d′ {d.name}" for d in DISKS],
        [(m, dose, seen, [_text(_value(iq, m, dose, d.name, "cho_dprime"), "{:.2f}", True) for d in DISKS])
         for m, dose, seen in rows])
    spec = TEXTURE + RESOLUTION
    tex = TaskTable(
        "Noise texture (NPS) and resolution (TTF)",
        "Noise power spectrum of a 40 mm uniform ROI (each realisation minus the ensemble mean): noise magnitude, "
        "peak and mean frequency (cycles/mm) and the shift of f_mean from the full-dose FBP (negative: blotchier, "
        "'plastic' noise). TTF50/TTF10 (cycles/mm) by the circular-edge method on the ensemble mean of a bone "
        "(+1000 HU) and a polystyrene (-35 HU) rod"
        + (f"; the images' Nyquist frequency is {0.5 / pixel_mm:.3f} cycles/mm ({pixel_mm:.2f} mm pixels)"
           if pixel_mm else "")
        + ". * dose not seen in training.",
        [label for _, _, label, _ in spec],
        [(m, dose, seen, [_text(_value(iq, m, dose, t, metric), fmt, False) for t, metric, _, fmt in spec])
         for m, dose, seen in rows])
    return [det, tex]


def to_markdown(tables: list[TaskTable]) -> str:
    out = []
    for t in tables:
        head = ["method", "dose", *t.columns]
        lines = [f"**{t.title}.** {t.caption}", "", "| " + " | ".join(md_escape(h) for h in head) + " |",
                 "|---|---|" + "---|" * len(t.columns)]
        lines += ["| " + " | ".join([md_escape(m), t.row_label(d, s), *cells]) + " |" for m, d, s, cells in t.rows]
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def to_latex(tables: list[TaskTable]) -> str:
    out = []
    for t in tables:
        head = " & ".join(["Method", "Dose", *(_tex_escape(c) for c in t.columns)]) + r" \\"
        body = [" & ".join([_tex_escape(m), _tex_escape(t.row_label(d, s)), *(c.replace("–", "--") for c in cells)])
                + r" \\" for m, d, s, cells in t.rows]
        out.append("\n".join([r"\begin{table}[t]", r"\centering",
                              rf"\caption{{{_tex_escape(t.title)}. {_tex_escape(t.caption)}}}",
                              r"\resizebox{\linewidth}{!}{%", rf"\begin{{tabular}}{{ll{'c' * len(t.columns)}}}",
                              r"\toprule", head, r"\midrule", *body, r"\bottomrule", r"\end{tabular}}",
                              r"\end{table}"]) + "\n")
    return "\n".join(out)


def to_html(tables: list[TaskTable]) -> str:
    parts = ["<h2>Task-based image quality</h2>"]
    for t in tables:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in ["method", "dose", *t.columns])
        body = "".join(
            f"<tr><td>{html.escape(m)}</td><td>{html.escape(t.row_label(d, s))}</td>"
            + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for m, d, s, cells in t.rows)
        parts.append(f"<h3>{html.escape(t.title)}</h3><p>{html.escape(t.caption)}</p><div class='scroll'>"
                     f"<table class='sortable'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")
    return "\n".join(parts)
