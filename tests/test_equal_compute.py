"""Rankings at equal compute: the budget every method reached, each method's PSNR there, the ranks beside the
leaderboard's, from hand-made manifests and from a fresh tiny run's report."""

from __future__ import annotations

import pandas as pd
import pytest

from ldct_bench.config import RunConfig
from ldct_bench.protocol import Protocol
from ldct_bench.report import make_report
from ldct_bench.report.compute import equal_compute
from ldct_bench.runner import run_matrix

from .conftest import TRAINED_ANATOMIES
from .helpers import tiny_overrides


def _manifests():
    one_stage = {"training": {"steps": {"main": 100}, "training_flops": 1e12,  # an older checkpoint: no FLOPs per step
                              "learning_curve": [["main", 50, 10.0, 40.0], ["main", 100, 20.0, 42.0], "garbage"]}}
    two_stages = {"training": {"steps": {"clip": 100, "diff": 50}, "training_flops": 1.1e12,
                               "flops_per_step": {"clip": 1e9, "diff": 2e10},
                               "learning_curve": [["diff", 25, 30.0, 41.0], ["diff", 50, 60.0, 43.0]]}}
    return {"run": {"methods": {"a": one_stage, "b": two_stages, "ldct": {"config": {}},
                                "c": {"training": {"steps": {"main": 5}, "training_flops": 1e9}}}}}


def test_each_method_is_read_at_the_largest_budget_every_one_reached():
    ec = equal_compute(_manifests(), pd.Series({"b": 1.5, "a": 2.0, "ldct": 3.0}))
    assert ec.budget == pytest.approx(1e12)  # a stopped at 1e12; b went on to 1.1e12
    # b's first curve point: all of its first stage (1e11) and 25 steps of its second (5e11)
    assert ec.curves.loc[ec.curves["method"] == "b", "flops"].tolist() == pytest.approx([6e11, 1.1e12])
    assert ec.table.loc["a", "at_budget"] == 42.0 and ec.table.loc["b", "at_budget"] == 41.0
    assert ec.table.loc["a", "rank_at_budget"] == 1 and ec.table.loc["a", "leaderboard_rank"] == 2  # the flip
    assert ec.table.loc["b", "final"] == 43.0
    assert "c" in ec.skipped and "ldct" not in ec.table.index


def test_a_fresh_runs_report_has_the_equal_compute_table_and_the_learning_curves(tiny_dataset, tmp_path):
    config = RunConfig(methods=("ldct", "redcnn", "dncnn"), out=tmp_path / "run",
                       protocol=Protocol((0.1,), (0.1,), TRAINED_ANATOMIES), data=str(tiny_dataset.root),
                       cache_dir=tmp_path / "cache", overrides=tiny_overrides("redcnn", "dncnn"))
    run_matrix(config, progress=False, echo=lambda *a: None)
    written = make_report([tmp_path / "run"], tmp_path / "report", formats=("md", "html"))
    text = (tmp_path / "report" / "equal_compute.md").read_text()
    assert "| redcnn |" in text and "| dncnn |" in text and "training FLOPs" in text
    assert tmp_path / "report" / "figures" / "learning_curves.png" in written
    assert "Rankings at equal compute" in (tmp_path / "report" / "report.html").read_text()
