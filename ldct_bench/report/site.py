"""The documentation's numbers, made from the results stores and never typed: every committed report's tables are
made again from the runs it read, with the options and the command its report_manifest.json records. The docs build
(docs/gen_pages.py) and the README's generated tables both come from here, and a test holds the README to them.

    python -m ldct_bench.report.site      # rewrite the README's generated tables from the stores
"""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_write_text
from . import make_report

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"
README_START, README_END = "<!-- generated: reference leaderboard -->", "<!-- end generated -->"
# the README's generated blocks: marker name -> (committed report, its Markdown file)
README_TABLES = {"reference leaderboard": ("reference/report", "leaderboard_by_dose.md"),
                 "equal compute": ("reference/report", "equal_compute.md"),
                 "dose generalization": ("reference/report", "generalization.md"),
                 "anatomy generalization": ("loao-abdomen/report", "generalization.md"),
                 "acquisition generalization": ("acquisition-loao/report", "generalization.md")}


@dataclass(frozen=True)
class CommittedReport:
    """A report committed under results/runs: where it is, the command that made it, the runs and options it read."""

    folder: Path
    command: str
    runs: tuple[Path, ...]
    options: dict

    @property
    def name(self) -> str:
        return str(self.folder.relative_to(RESULTS / "runs"))

    def tables(self) -> dict[str, str]:
        """Its Markdown tables (file name -> text), made again from the stores in a temporary folder."""
        with tempfile.TemporaryDirectory() as tmp:
            make_report(list(self.runs), Path(tmp), formats=("md",), draw=False, **self.options)
            return {p.name: p.read_text() for p in sorted(Path(tmp).glob("*.md"))}

    def figures(self) -> list[Path]:
        """The PNG figures the committed report holds (made by `ldct-bench report`; the tables are remade here)."""
        return sorted((self.folder / "figures").glob("*.png"))


def _inside_results(text: str, where: Path) -> Path:
    """A run path read from a report manifest: relative to the repository and inside results/, or one sentence."""
    path = (ROOT / text).resolve()
    if RESULTS.resolve() not in path.parents or not (path / "results.parquet").is_file():
        raise ValueError(f"{where}: run {text!r} is not a results store under results/; remake that report with "
                         "`ldct-bench report`.")
    return path


def committed_reports(results: Path = RESULTS) -> list[CommittedReport]:
    """Every committed report under results/runs, in path order."""
    out = []
    for manifest in sorted((results / "runs").glob("**/report_manifest.json")):
        try:
            m = json.loads(manifest.read_text())
            runs = tuple(_inside_results(str(r), manifest) for r in m["runs"].values())
            words = shlex.split(m["command"])
        except (ValueError, KeyError, AttributeError, TypeError) as exc:
            raise ValueError(f"{manifest}: not a report manifest this project wrote ({exc}).") from None
        flags = {w: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("--")}
        options = {"metrics": tuple(flags.get("--metrics", "psnr,ssim,rmse").split(",")),
                   "window": flags.get("--window", "founddiff"), "reference": flags.get("--reference", "full_dose"),
                   "unit": flags.get("--unit", "patient")}
        out.append(CommittedReport(manifest.parent, m["command"], runs, options))
    return out


def first_table(markdown: str) -> str:
    """The first caption and table of a report's Markdown file (its PSNR table)."""
    blocks = markdown.strip().split("\n\n")
    table = next(i for i, b in enumerate(blocks) if b.startswith("|"))
    return "\n\n".join(blocks[max(0, table - 1):table + 1]) + "\n"


def readme_tables(results: Path = RESULTS) -> dict[str, str]:
    """Every generated block of the README (marker name -> its first caption and table), from the stores; each
    report's tables are made once. The reference leaderboard is the reference run's PSNR per dose over every
    anatomy."""
    reports = {r.name: r for r in committed_reports(results)}
    made = {name: reports[name].tables() for name in {report for report, _ in README_TABLES.values()}}
    out = {}
    for block, (report, table) in README_TABLES.items():
        text = made[report][table]
        out[block] = first_table(text.split("\n", 2)[2] if text.startswith("## ") else text)
    return out


def readme_block(readme: str, table: str, name: str = "reference leaderboard") -> str:
    """`readme` with the text between the markers of its generated block `name` replaced by `table`."""
    start = f"<!-- generated: {name} -->"
    if start not in readme or README_END not in readme.split(start, 1)[1]:
        raise ValueError(f"the README lacks its generated-block markers {start} ... {README_END}.")
    head, rest = readme.split(start, 1)
    return head + start + "\n" + table + README_END + rest.split(README_END, 1)[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Rewrite the README's generated tables from the stores.")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args(argv)
    readme = args.readme.read_text()
    for name, table in readme_tables().items():
        readme = readme_block(readme, table, name)
    atomic_write_text(args.readme, readme)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
