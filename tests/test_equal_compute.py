"""Rankings at equal compute: the budget every method reached, each method's PSNR there, the ranks beside the
leaderboard's, from hand-made manifests (a fresh run's report is tested with the tutorial's plug-in)."""

from __future__ import annotations

import pandas as pd
import pytest

from ldct_bench.report.compute import equal_compute


def _manifests():
    one_stage = {"training": {"steps": {"main": 100}, "training_flops": 1e12,  # an older checkpoint: no FLOPs per step
                              "learning_curve": [["main", 50, 10.0, 40.0], ["main", 100, 20.0, 42.0], "garbage"]}}
    two_stages = {"training": {"steps": {"clip": 100, "diff": 50}, "training_flops": 1.1e12,
                               "flops_per_step": {"clip": 1e9, "diff": 2e10},
                               "learning_curve": [["diff", 25, 30.0, 41.0], ["diff", 50, 60.0, 43.0]]}}
    return {"run": {"methods": {"a": one_stage, "b": two_stages, "ldct": {"config": {}},
                                "c": {"training": {"steps": {"main": 5}, "training_flops": 1e9}},
                                "filter": {"training": {"steps": {"main": 5}, "training_flops": 0,  # element-wise
                                                        "flops_per_step": {"main": 0},
                                                        "learning_curve": [["main", 5, 1.0, 44.0]]}}}}}


def test_each_method_is_read_at_the_largest_budget_every_one_reached():
    ec = equal_compute(_manifests(), pd.Series({"b": 1.5, "a": 2.0, "ldct": 3.0}))
    assert ec.budget == pytest.approx(1e12)  # a stopped at 1e12; b went on to 1.1e12
    # b's first curve point: all of its first stage (1e11) and 25 steps of its second (5e11)
    assert ec.curves.loc[ec.curves["method"] == "b", "flops"].tolist() == pytest.approx([6e11, 1.1e12])
    assert ec.table.loc["a", "at_budget"] == 42.0 and ec.table.loc["b", "at_budget"] == 41.0
    assert ec.table.loc["a", "rank_at_budget"] == 1 and ec.table.loc["a", "leaderboard_rank"] == 2  # the flip
    assert ec.table.loc["b", "final"] == 43.0
    assert "c" in ec.skipped and "ldct" not in ec.table.index
    assert "element-wise" in ec.skipped["filter"] and "filter" not in ec.table.index  # not a budget of 0 for all


def test_a_training_logs_rows_that_are_not_numbers_are_left_out_of_the_curve(tmp_path):
    from ldct_bench.runner import learning_curve

    log = tmp_path / "train_log.csv"
    log.write_text("stage,step,elapsed_s,loss,val_psnr\nmain,5,1.0,0.1,40\nmain,x,2.0,0.1,41\nmain,10,inf,0.1,42\n"
                   "main,15,3,0.1,\nmain,20,4,0.1,43\n")
    assert learning_curve(log) == [["main", 5, 1.0, 40.0], ["main", 20, 4.0, 43.0]]
    assert learning_curve(tmp_path / "absent.csv") == []
