"""Pages the docs build makes from the code and the results stores (run by mkdocs-gen-files): one page per committed
report, its tables made again from its runs (ldct_bench.report.site) and its figures copied; one page per registered
method, from its class and its committed checkpoints' manifests; the benchmark tables from results/bench. No number
on these pages is typed by hand."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import mkdocs_gen_files

from ldct_bench.checkpoints import committed_checkpoints
from ldct_bench.methods import registry
from ldct_bench.report.site import RESULTS, ROOT, committed_reports
from ldct_bench.selection import left_out_of_all

TABLE_TITLES = {"leaderboard_by_dose.md": "Per dose, over every anatomy", "leaderboard.md": "Per anatomy and dose",
                "generalization.md": "Generalization", "task_based.md": "Task-based image quality",
                "equal_compute.md": "Rankings at equal compute"}


def copy(source: Path, target: str) -> None:
    with mkdocs_gen_files.open(target, "wb") as f:
        f.write(source.read_bytes())


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def results_pages() -> None:
    reports = committed_reports()
    index = ["# Results", "", "Every committed run's report, its tables made again from the run stores when these "
             "pages were built (the same code as `ldct-bench report`), its figures as the report drew them.", ""]
    for report in reports:
        slug = report.name.replace("/", "-")
        index.append(f"- [{report.name}]({slug}.md): `{report.command}`")
        page = [f"# {report.name}", "", "Made by", "", f"```\n{report.command}\n```", "",
                "from the runs " + ", ".join(f"`{r.relative_to(ROOT)}`" for r in report.runs) + " (each run's "
                "`manifest.json` holds the command, commit and hardware that made it).", ""]
        for name, text in sorted(report.tables().items(), key=lambda kv: list(TABLE_TITLES).index(kv[0])
                                 if kv[0] in TABLE_TITLES else 99):
            body = text.split("\n", 2)[2] if text.startswith("## ") else text
            page += [f"## {TABLE_TITLES.get(name, name)}", "", body, ""]
        figures = report.figures()
        if figures:
            page += ["## Figures", ""]
            for fig in figures:
                target = f"results/{slug}/{fig.name}"
                copy(fig, target)
                page += [f"![{fig.stem}]({slug}/{fig.name})", ""]
        with mkdocs_gen_files.open(f"results/{slug}.md", "w") as f:
            f.write("\n".join(page))
    index.append("- [Real CT](real-ct.md): every committed checkpoint on the real slices pydicom ships and on Debian's "
                 "real head volume, with doses inserted (`python scripts/real_transfer.py`)")
    with mkdocs_gen_files.open("results/index.md", "w") as f:
        f.write("\n".join(index) + "\n")


def transfer_page() -> None:
    """The real-CT transfer tables scripts/real_transfer.py wrote (results/transfer/), newest training data first,
    each under the command its manifest records."""
    page = ["# Real CT", "", "Every committed checkpoint on real CT with 50, 25, 10 and 5 % inserted, scored against "
            "the real full dose in the FoundDiff window. The real slices are a test, never a tuning set.", ""]
    for folder, title in (("after-ema", "The committed checkpoints: WGAN-MSE denoising with its generator's running "
                                        "average, trained to a 6000-step cap, both decided on the validation split"),
                          ("after-recipes", "Before: the bilateral filter's range widths in noise SDs and WGAN-MSE's "
                                            "adversarial weight decided on the validation split"),
                          ("after-clinical", "Before: trained on the clinical phantoms, with the earlier bilateral and "
                                             "WGAN-MSE recipes"),
                          ("after-realistic", "Before: trained on the realistic phantoms, without the table"),
                          ("before-realistic", "Before that: trained on the ellipse phantoms")):
        run = RESULTS / "transfer" / folder
        if (run / "real.md").is_file():
            command = json.loads((run / "real_manifest.json").read_text())["command"]
            page += [f"## {title}", "", f"Made by `{command}`.", "", (run / "real.md").read_text(), ""]
    with mkdocs_gen_files.open("results/real-ct.md", "w") as f:
        f.write("\n".join(page))


def checkpoint_rows(name: str) -> list[list]:
    rows = []
    for weights in committed_checkpoints(name):
        m = json.loads((weights.parent / "manifest.json").read_text())
        steps = ", ".join(f"{v} {k}" for k, v in (m.get("steps") or {}).items())
        plateau = ", ".join(f"{k}: {'yes' if v else 'no (cap)'}" for k, v in (m.get("plateaued") or {}).items())
        final = [v for _, _, v in m.get("validation_curve") or []]
        rows.append([f"`{weights.parent.name}`", steps, plateau or "–",
                     f"{max(final):.2f} / {m.get('val_psnr_ldct', float('nan')):.2f}" if final else "–",
                     f"{m.get('wall_time_s', 0) / 60:.0f} min", f"{m.get('training_flops', 0):.2g}"])
    return rows


# How the departures table of methods/index.md names each method (its first column), so each method's page repeats
# the rows that concern it; "all learned" rows go on every learned method's page.
DEPARTURE_NAMES = {"redcnn": ("RED-CNN",), "wganvgg": ("WGAN",), "wgan-mse": ("WGAN",), "corediff": ("CoreDiff",),
                   "founddiff": ("FoundDiff",), "dncnn": ("DnCNN",), "bilateral": ("bilateral",),
                   "restormer": ("Restormer",), "tv": ("TV",), "nlm": ("NLM",), "bm3d": ("BM3D",)}


def departure_rows(name: str, learned: bool) -> list[list[str]]:
    """The rows of the departures table (docs/methods/index.md) that concern `name`."""
    text = (Path(__file__).parent / "methods" / "index.md").read_text()
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and line.count("|") >= 4]
    rows = [r for r in rows if r[0] not in ("method", "name")]
    keys = DEPARTURE_NAMES.get(name, ())
    return [r[1:] for r in rows if (learned and r[0] == "all learned")
            or any(k in r[0].replace(",", " ").replace("/", " ").split() or r[0].startswith(k) for k in keys)]


def method_pages() -> None:
    nav = ["# Every method", "", "| method | what it is | in `--methods all` |", "|---|---|---|"]
    for name, cls in sorted(registry().items()):
        why = left_out_of_all(cls)
        nav.append(f"| [{name}]({name}.md) | {cls.description} | {'no: ' + why if why else 'yes'} |")
        module = __import__(cls.__module__, fromlist=["_"])
        page = [f"# {name}", "", cls.description, "", f"Entry point: `{name} = \"{cls.__module__}:{cls.__name__}\"`.",
                "", (module.__doc__ or "").strip(), ""]
        quick, paper = cls.Config.profile("quick").to_dict(), cls.Config.profile("paper").to_dict()
        if quick:
            page += ["## Profiles", "", table(["field", "quick", "paper"], [[k, quick[k], paper[k]] for k in quick])]
        if cls.learned:
            n = {p: cls(cls.Config.profile(p)).n_parameters() for p in ("quick", "paper")}
            page += [f"Parameters: {n['quick']:,} (quick), {n['paper']:,} (paper).", ""]
            rows = checkpoint_rows(name)
            page += ["## Committed checkpoint", ""] + ([table(
                ["folder", "steps", "plateaued", "val PSNR / input (dB)", "wall time", "training FLOPs"], rows)]
                if rows else ["None yet: a run trains it (cached) or takes `--checkpoint`.", ""])
        departures = departure_rows(name, cls.learned)
        if departures:
            page += ["## Where it departs from the paper", "", table(["departure", "why"], departures),
                     "The whole table, with the simulator's and the observers': [Methods](index.md).", ""]
        if why:
            page += [f"Left out of `--methods all`: {why}.", ""]
        with mkdocs_gen_files.open(f"methods/{name}.md", "w") as f:
            f.write("\n".join(page))
    with mkdocs_gen_files.open("methods/all.md", "w") as f:
        f.write("\n".join(nav) + "\n")


def performance_page() -> None:
    bench = RESULTS / "bench"
    page = [(bench / "README.md").read_text().replace("# Benchmarks", "# Performance", 1), ""]
    for path in sorted(bench.glob("**/*.csv")):
        with path.open() as f:
            rows = list(csv.reader(f))
        if rows:
            page += [f"## `{path.relative_to(RESULTS)}`", "", table(rows[0], rows[1:]), ""]
    with mkdocs_gen_files.open("performance.md", "w") as f:
        f.write("\n".join(page))


def measured_figures() -> None:
    """The validation figures the concept pages show, as the scripts that made them drew them."""
    for source in ("iq_validation/iq_validation.png", "realism/realism.png", "realism/cranium_axes.png"):
        if (RESULTS / source).is_file():
            copy(RESULTS / source, f"figures/{Path(source).name}")


results_pages()
transfer_page()
method_pages()
performance_page()
measured_figures()
