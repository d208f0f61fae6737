"""The tutorial's plug-in (docs/examples/tiny_residual.py), registered through a test-only entry point, taken
through every step the tutorial page shows: methods, train, run, report."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

import ldct_bench.methods as methods_mod
from ldct_bench.cli import main

from .helpers import tiny_overrides

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
SMALL = ["--set", "tiny.iterations=6", "--set", "tiny.val_every=3", "--set", "tiny.patch_size=32",
         "--set", "tiny.batch_size=2", "--set", "tiny.width=8"]


def test_the_tutorial_plug_in_trains_runs_and_reports(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    ep = metadata.EntryPoint(name="tiny", value="tiny_residual:TinyResidual", group="ldct_bench.methods")
    real = metadata.entry_points

    def entry_points(group=None, **kw):
        found = real(group=group, **kw)
        return [*found, ep] if group == "ldct_bench.methods" else found

    monkeypatch.setattr(methods_mod.metadata, "entry_points", entry_points)
    monkeypatch.setattr(methods_mod, "_REGISTRY", None)
    cli = CliRunner()
    listed = cli.invoke(main, ["methods"])
    assert listed.exit_code == 0 and "tiny residual CNN" in listed.output
    data = ["--data", str(tiny_dataset.root), "--cache-dir", str(tmp_path / "cache")]
    trained = cli.invoke(main, ["train", "--method", "tiny", "--anatomies", "chest", *data, *SMALL])
    assert trained.exit_code == 0, trained.output
    redcnn = [a for o in tiny_overrides("redcnn") for a in ("--set", f"redcnn.{o.field}={o.value}")]
    ran = cli.invoke(main, ["run", "--methods", "ldct,redcnn,tiny", "--doses", "10,25", "--anatomies", "chest", *data,
                            *SMALL, *redcnn, "--out", str(tmp_path / "run")])
    assert ran.exit_code == 0, ran.output
    table = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert set(table["method"]) == {"ldct", "redcnn", "tiny"} and set(table["dose"]) == {0.1, 0.25}
    reported = cli.invoke(main, ["report", str(tmp_path / "run"), "--out", str(tmp_path / "report")])
    assert reported.exit_code == 0, reported.output
    assert "| tiny |" in (tmp_path / "report" / "leaderboard_by_dose.md").read_text()
    # the rankings at equal compute: its learning curve beside RED-CNN's (the page's step 4)
    equal = (tmp_path / "report" / "equal_compute.md").read_text()
    assert "| tiny |" in equal and "| redcnn |" in equal and "training FLOPs" in equal
    assert (tmp_path / "report" / "figures" / "learning_curves.png").is_file()
    sys.modules.pop("tiny_residual", None)
