"""Rankings at equal compute. The leaderboard compares checkpoints trained with unequal budgets (a CPU cap stops
some, a plateau others); here every learned method is read off its own learning curve, at the largest training
budget in FLOPs that every one of them reached, and its rank there is set beside its rank in the leaderboard.

The curves come from the run manifests (each method's `training.learning_curve`: validation PSNR at each step,
recorded from its checkpoint's training log). A step's FLOPs are those of the stages before it in full plus its own
stage's steps so far; a method's PSNR at a budget is the best validation PSNR it had reached within it (the
checkpoint one would have kept). All methods of one run validate on the same slices, so their curves compare.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .figures import save


@dataclass
class EqualCompute:
    curves: pd.DataFrame  # method, stage, step, flops, wall_s, val_psnr
    budget: float  # the largest training FLOPs every learned method reached
    table: pd.DataFrame  # index: method; at_budget, rank_at_budget, final, final_flops, leaderboard_rank
    skipped: dict[str, str]  # method -> why it has no curve

    def caption(self) -> str:
        skipped = "".join(f" {m}: {why}." for m, why in self.skipped.items())
        return (f"Validation PSNR (dB, FoundDiff window, the validation split every method trained with) at "
                f"{self.budget:.2g} training FLOPs, the largest budget every learned method reached, and its rank "
                f"there beside its rank in the leaderboard (mean rank over its cells); 'final' is the checkpoint's "
                f"own curve at its last validation.{skipped}")


def _number(value) -> float | None:
    """A finite float read from a manifest, or None (a manifest is input: never trusted to hold numbers)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def learning_curves(manifests: dict[str, dict]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Every learned method's curve (first run that has it), with FLOPs at each validated step; and why each learned
    method without a usable curve has none."""
    rows, skipped, seen = [], {}, set()
    for manifest in manifests.values():
        for name, info in manifest.get("methods", {}).items():
            training = info.get("training") if isinstance(info, dict) else None
            if name in seen or not isinstance(training, dict):
                continue
            steps = training.get("steps") if isinstance(training.get("steps"), dict) else {}
            per_step = training.get("flops_per_step") if isinstance(training.get("flops_per_step"), dict) else {}
            total, curve = _number(training.get("training_flops")), training.get("learning_curve")
            if not per_step and len(steps) == 1 and total and _number(next(iter(steps.values()))):
                per_step = {s: total / _number(n) for s, n in steps.items()}  # one stage: FLOPs are per step alike
            if not isinstance(curve, list) or not curve or not per_step:
                skipped[name] = "its checkpoint recorded no learning curve or no FLOPs per step"
                continue
            if not any(_number(v) for v in per_step.values()):  # a budget of 0 would leave every other method at 0
                skipped[name] = ("its training is element-wise work, which torch's FLOP formulas (matrix products, "
                                 "convolutions, attention) do not count")
                continue
            before, offset = 0.0, {}
            for stage, n in steps.items():
                offset[stage] = before
                before += (_number(per_step.get(stage)) or 0.0) * (_number(n) or 0.0)
            for point in curve:
                if not (isinstance(point, list) and len(point) == 4 and point[0] in offset):
                    continue
                step, wall, psnr = (_number(v) for v in point[1:])
                if None in (step, wall, psnr):
                    continue
                flops = offset[point[0]] + (_number(per_step.get(point[0])) or 0.0) * step
                rows.append({"method": name, "stage": point[0], "step": int(step), "flops": flops, "wall_s": wall,
                             "val_psnr": psnr})
            seen.add(name)
    curves = pd.DataFrame(rows, columns=["method", "stage", "step", "flops", "wall_s", "val_psnr"])
    return curves, {m: why for m, why in skipped.items() if m not in seen}


def equal_compute(manifests: dict[str, dict], overall_rank: pd.Series) -> EqualCompute | None:
    """The table at the common budget (None with fewer than two learned methods that have curves)."""
    curves, skipped = learning_curves(manifests)
    if curves["method"].nunique() < 2:
        return None
    budget = float(curves.groupby("method")["flops"].max().min())
    rows = {}
    for method, c in curves.groupby("method", sort=False):
        within = c[c["flops"] <= budget * (1 + 1e-9)]
        last = c.iloc[-1]
        rows[method] = {"at_budget": within["val_psnr"].max() if len(within) else float("nan"),
                        "final": float(last["val_psnr"]), "final_flops": float(last["flops"]),
                        "leaderboard_rank": float(overall_rank.get(method, float("nan")))}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table["rank_at_budget"] = table["at_budget"].rank(ascending=False, method="min")
    ranked = table["leaderboard_rank"].rank(method="min")  # the leaderboard's mean ranks, among these methods
    table["leaderboard_rank"] = ranked
    table = table.sort_values("rank_at_budget")
    return EqualCompute(curves, budget, table[["at_budget", "rank_at_budget", "leaderboard_rank", "final",
                                               "final_flops"]], skipped)


def to_markdown(ec: EqualCompute) -> str:
    lines = ["## Rankings at equal compute", "", ec.caption(), "",
             f"| method | val PSNR at {ec.budget:.2g} FLOPs | rank there | rank in the leaderboard | final val PSNR "
             "| at FLOPs |", "|---|---|---|---|---|---|"]
    for method, r in ec.table.iterrows():
        flip = " ⇄" if r["rank_at_budget"] != r["leaderboard_rank"] else ""
        lines.append(f"| {method} | {r['at_budget']:.2f} | {r['rank_at_budget']:.0f}{flip} | "
                     f"{r['leaderboard_rank']:.0f} | {r['final']:.2f} | {r['final_flops']:.2g} |")
    return "\n".join(lines) + "\n\n⇄: the rank at equal compute differs from the leaderboard's.\n"


def to_html(ec: EqualCompute) -> str:
    from html import escape

    head = "".join(f"<th>{escape(h)}</th>" for h in ("method", f"val PSNR at {ec.budget:.2g} FLOPs", "rank there",
                                                      "rank in the leaderboard", "final val PSNR", "at FLOPs"))
    body = "".join(
        f"<tr><td>{escape(str(m))}</td><td>{r['at_budget']:.2f}</td><td>{r['rank_at_budget']:.0f}</td>"
        f"<td>{r['leaderboard_rank']:.0f}</td><td>{r['final']:.2f}</td><td>{r['final_flops']:.2g}</td></tr>"
        for m, r in ec.table.iterrows())
    return (f"<h2>Rankings at equal compute</h2><p>{escape(ec.caption())}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def learning_curve_figure(ec: EqualCompute, path: Path) -> list[Path]:
    """Validation PSNR against training FLOPs (the common budget marked) and against wall time on the machine that
    trained each method."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for method, c in ec.curves.groupby("method", sort=False):
        axes[0].plot(c["flops"], c["val_psnr"], marker=".", label=method)
        axes[1].plot(c["wall_s"] / 60, c["val_psnr"], marker=".", label=method)
    axes[0].axvline(ec.budget, color="grey", ls="--", lw=1)
    axes[0].set(xscale="log", xlabel="training FLOPs", ylabel="validation PSNR (dB)",
                title="against compute (dashed: the common budget)")
    axes[1].set(xlabel="training wall time (min, the machine that trained it)", ylabel="validation PSNR (dB)",
                title="against wall time")
    axes[0].legend(fontsize=8)
    return save(fig, path)
