"""The one hyper-parameter of each training-free method (its strength: a multiple of each slice's own noise SD),
chosen on the validation split, never the test set.

    python scripts/tune_classical.py [--out results/tuning] [--phantoms clinical] [--methods tv,nlm,bm3d]

Scores each setting of a small grid by the mean validation PSNR (the FoundDiff window, as training validates) over
the validation patients of every anatomy at the seen doses (10 and 50 %) through the default scanner, and writes
classical.json (every score), classical.md (the table; the best of each method marked) and manifest.json (command,
commit, versions); methods not named keep their rows from an earlier classical.json. The chosen values are then
written by hand into each method's config defaults in baselines/classical.py, where their comment points here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ldct_bench.atomic import atomic_write_json, atomic_write_text
from ldct_bench.conventions import ANATOMY_MODELS, DEFAULT_ANATOMY_MODEL
from ldct_bench.data.dataset import LDCTDataset, PhantomConfig
from ldct_bench.environment import git_commit, versions
from ldct_bench.methods import get_method
from ldct_bench.training import validation_psnr

# each method's settings tried (the strength; NLM's search radius too, which sets its cost)
GRID = {"tv": [{"strength": s} for s in (0.3, 0.45, 0.6, 0.8, 1.0, 1.3)],
        "nlm": [{"strength": s, "search_radius": r} for r in (4, 6) for s in (0.4, 0.6, 0.8, 1.0, 1.2)],
        "bm3d": [{"strength": s} for s in (0.6, 0.8, 1.0, 1.25, 1.5)]}
DOSES = (0.1, 0.5)
TIE_DB = 0.02  # settings closer than this on the validation split are a tie, broken by cost (see `table`)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/tuning"))
    parser.add_argument("--phantoms", default=DEFAULT_ANATOMY_MODEL, choices=ANATOMY_MODELS)
    parser.add_argument("--methods", default="tv,nlm,bm3d")
    args = parser.parse_args(argv)
    ds = LDCTDataset.embedded(PhantomConfig(anatomy_model=args.phantoms), doses=DOSES, splits=("val",))
    names = args.methods.split(",")
    earlier = args.out / "classical.json"
    rows = [r for r in (json.loads(earlier.read_text()) if earlier.is_file() else [])
            if r["method"] not in names and r["method"] != "ldct"]
    for dose in DOSES:
        pairs = ds.pairs(ds.anatomies, (dose,), "val")
        rows.append({"method": "ldct", "setting": "", "dose": dose, "val_psnr": validation_psnr(None, pairs)})
        for name in names:
            cls = get_method(name)
            for setting in GRID[name]:
                t = time.perf_counter()
                psnr = validation_psnr(cls(cls.Config.profile("quick", **setting)), pairs)
                text = ", ".join(f"{k}={v}" for k, v in setting.items())
                rows.append({"method": name, "setting": text, "dose": dose, "val_psnr": psnr,
                             "s_per_slice": (time.perf_counter() - t) / len(pairs)})
                print(f"{name} {text} dose {dose:g}: {psnr:.3f} dB", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "classical.json", rows)
    atomic_write_text(args.out / "classical.md", table(rows, len(pairs), ds.root.name))
    atomic_write_json(args.out / "manifest.json", {"command": " ".join(["python", *sys.argv]), "dataset": ds.root.name,
                                                   "git_commit": git_commit(), "versions": versions()})
    return 0


def table(rows: list[dict], n_slices: int, dataset: str) -> str:
    """Mean validation PSNR over the seen doses per (method, setting), the chosen one of each method in bold: among
    the settings within TIE_DB of the method's best mean (closer than 24 slices can tell apart), the cheapest (the
    smallest search radius: every setting but the strength sets the cost), then the best mean."""
    means: dict[tuple, list] = {}
    for r in sorted(rows, key=lambda r: (r["method"] != "ldct", r["method"], r["dose"])):
        means.setdefault((r["method"], r["setting"]), []).append(r["val_psnr"])
    mean = {key: sum(v) / len(v) for key, v in means.items()}
    top = {m: max(v for (n, _), v in mean.items() if n == m) for m, _ in mean}

    def cost(setting: str) -> tuple:
        return tuple(float(kv.split("=")[1]) for kv in setting.split(", ") if kv and not kv.startswith("strength="))

    best = {m: min((s for (n, s), v in mean.items() if n == m and v >= top[m] - TIE_DB),
                   key=lambda s, m=m: (cost(s), -mean[(m, s)])) for m in top}
    lines = [f"Made by `python scripts/tune_classical.py` on the validation split of {dataset} ({n_slices} slices per "
             "dose, every anatomy): mean PSNR (dB, FoundDiff window) at 10 and 50 %, per setting (strength: a multiple of "
             "each slice's estimated noise SD). The chosen setting, in bold (the cheapest within "
             f"{TIE_DB} dB of the method's best mean), is each method's config default.", "",
             "| method | setting | PSNR 10 % | PSNR 50 % | mean |", "|---|---|---|---|---|"]
    for (m, s), v in means.items():
        cells = [f"{x:.2f}" for x in v] + [f"{mean[(m, s)]:.2f}"]
        mark = "**" if best.get(m) == s and m != "ldct" else ""
        lines.append(f"| {m} | {mark}{s or '–'}{mark} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
