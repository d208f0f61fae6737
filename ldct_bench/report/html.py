"""One self-contained HTML page: leaderboards (sortable), figures embedded as data URIs, the manifest.
Every piece of text that comes from the results (method names, paths, manifest values) is escaped."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from .leaderboard import FORMAT, MISSING, Leaderboard, number

SORT_JS = """
document.querySelectorAll('table.sortable th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const rows = Array.from(body.rows);
  const asc = th.dataset.asc !== 'true'; th.dataset.asc = asc;
  const key = r => parseFloat(r.cells[col].dataset.v ?? r.cells[col].textContent) || r.cells[col].textContent;
  rows.sort((a, b) => (key(a) > key(b) ? 1 : -1) * (asc ? 1 : -1));
  rows.forEach(r => body.appendChild(r));
}));
"""

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222} table{border-collapse:collapse;margin:1em 0}
th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:right} td{white-space:nowrap;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto} th{cursor:pointer;background:#f4f4f4}
td:first-child,th:first-child{text-align:left} .best{font-weight:bold} .second{text-decoration:underline}
th.unseen{background:#ffe9d6}
.ci{color:#666;font-size:85%} th{white-space:normal;max-width:12em} img{max-width:100%}
pre{background:#f8f8f8;padding:1em;overflow:auto;font-size:12px}
"""


def leaderboard_html(lb: Leaderboard) -> str:
    """One table per anatomy (a dose x anatomy matrix is too wide for a screen), columns in dose order, unseen doses
    in orange; each cell the mean over its CI, so that a column is one number wide."""
    arrow = "↑" if lb.higher_is_better else "↓"
    anatomies = list(dict.fromkeys(c[0] for c in lb.columns()))
    tables = [_table_html(lb, [c for c in lb.columns() if c[0] == a], len(anatomies) > 1) for a in anatomies]
    return (f"<h3>{html.escape(lb.metric.upper())} {arrow} <small>(window {html.escape(lb.window)})</small></h3>"
            f"<p>{html.escape(lb.caption())}</p>" + "".join(tables))


def _table_html(lb: Leaderboard, columns: list, titled: bool) -> str:
    fmt = FORMAT.get(lb.metric, "{:.4f}")
    head = "".join(f'<th class="{"seen" if lb.seen[c[1]] else "unseen"}">{html.escape(lb.column_label(c))}</th>'
                   for c in columns)
    body = []
    for m in lb.mean.index:
        cells = [f"<td>{html.escape(str(m))}</td>"]
        for c in columns:
            v, lo, hi, r, p = (f.at[m, c] for f in (lb.mean, lb.ci_lo, lb.ci_hi, lb.rank, lb.p_value))
            cls = "best" if r == 1 else "second" if r == 2 else ""
            mark = "†" if r != 1 and p < 0.05 else ""
            if not np.isfinite(v):
                cells.append(f"<td>{MISSING}</td>")
                continue
            cells.append(f'<td class="{cls}" data-v="{v:.6g}">{html.escape(fmt.format(v) + mark)}<br>'
                         f'<span class="ci">[{html.escape(number(fmt, lo))}, {html.escape(number(fmt, hi))}]</span></td>')
        cells.append(f"<td>{number('{:.2f}', lb.overall_rank[m])}</td>")
        cells += [f"<td>{html.escape(t)}</td>" for t in lb.cost_cells(m)]
        body.append("<tr>" + "".join(cells) + "</tr>")
    cost = "".join(f"<th>{html.escape(h)}</th>" for h in lb.cost_header())
    title = f"<h4>{html.escape(columns[0][0])}</h4>" if titled else ""
    return (f'{title}<div class="scroll"><table class="sortable"><thead><tr><th>method</th>{head}<th>mean rank</th>'
            f"{cost}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def image_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(alt)}</figcaption></figure>")


def page(title: str, boards: list[Leaderboard], figures: list[tuple[str, Path]], manifests: dict[str, dict],
         general=None, sections: list[str] = ()) -> str:
    """The report's one self-contained page; `sections`: more HTML after the generalization table (task-based image
    quality, rankings at equal compute)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             "<p>Each table's caption says what its numbers are against, n, the CI and the test. <b>best</b>, "
             "<u>second</u>; orange headers: doses not seen in training. Click a header to sort.</p>"]
    parts += [leaderboard_html(lb) for lb in boards]
    if general is not None:
        from .generalization import to_html

        parts.append(to_html(general))
    parts += [s for s in sections if s]
    parts.append("<h2>Figures</h2>")
    parts += [image_tag(p, caption) for caption, p in figures]
    parts.append("<h2>Run manifests</h2>")
    for name, man in manifests.items():
        parts.append(f"<h3>{html.escape(name)}</h3><pre>{html.escape(json.dumps(man, indent=2, default=str))}</pre>")
    parts.append(f"<script>{SORT_JS}</script></body></html>")
    return "\n".join(parts)
