"""`ldct-bench run` end to end on the tiny dataset: rows, manifest, resume, determinism, bad arguments."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from ldct_bench.cli import main
from ldct_bench.protocol import Protocol
from ldct_bench.runner import run_matrix, train_method

from .test_methods import TINY

ANAT = ("chest",)


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    """A tiny RED-CNN checkpoint in the (private) cache, where `run` looks for it."""
    cache = tmp_path_factory.mktemp("ckcache")
    train_method("redcnn", "quick", tiny_dataset, (0.1,), ANAT, overrides=TINY["redcnn"], cache_dir=cache, progress=False)
    return cache


def _run(tiny_dataset, cache, out, **kw):
    proto = Protocol((0.1, 0.25), (0.1,), ANAT)
    return run_matrix(["ldct", "redcnn"], proto, out, data=str(tiny_dataset.root), cache_dir=cache, progress=False,
                      echo=lambda *a: None, **kw)


def test_tiny_run_rows_and_manifest(tiny_dataset, trained, tmp_path):
    table = _run(tiny_dataset, trained, tmp_path / "run")
    # 2 methods x 2 doses x 4 slices x 4 chest windows x 3 metrics
    assert len(table) == 2 * 2 * 4 * 4 * 3
    assert not table.duplicated(["method", "anatomy", "dose", "patient", "slice", "window", "metric"]).any()
    assert set(table.loc[table.dose == 0.1, "seen"]) == {True} and set(table.loc[table.dose == 0.25, "seen"]) == {False}
    assert set(table.window) == {"full", "founddiff", "lung", "abdomen"}
    man = (tmp_path / "run" / "manifest.json").read_text()
    for key in ('"git_commit"', '"versions"', '"hardware"', '"timings"', '"protocol"', '"seed"', '"redcnn.denoise_s"'):
        assert key in man
    stored = pd.read_parquet(tmp_path / "run" / "results.parquet")
    pd.testing.assert_frame_equal(stored.reset_index(drop=True), table.reset_index(drop=True))


def test_interrupted_run_resumes_without_duplicates(tiny_dataset, trained, tmp_path, monkeypatch):
    full = _run(tiny_dataset, trained, tmp_path / "ref")
    from baselines.redcnn import RedCNN

    calls = {"n": 0}
    real = RedCNN.denoise

    def flaky(self, x):
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt  # killed while denoising the second cell
        return real(self, x)

    monkeypatch.setattr(RedCNN, "denoise", flaky)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_dataset, trained, tmp_path / "run")
    cells = sorted(p.name for p in (tmp_path / "run" / "cells").glob("*/*.parquet"))
    assert len(cells) == 3  # 2 ldct cells + the first redcnn cell; nothing half-written
    assert not list((tmp_path / "run").rglob("*.tmp"))
    monkeypatch.setattr(RedCNN, "denoise", real)
    resumed = _run(tiny_dataset, trained, tmp_path / "run")
    cols = ["method", "anatomy", "dose", "patient", "slice", "window", "metric", "value"]
    pd.testing.assert_frame_equal(resumed[cols].reset_index(drop=True), full[cols].reset_index(drop=True))


def test_same_seed_gives_identical_numbers(tiny_dataset, trained, tmp_path):
    a = _run(tiny_dataset, trained, tmp_path / "a")
    b = _run(tiny_dataset, trained, tmp_path / "b")
    assert a["value"].tolist() == b["value"].tolist()


def test_an_existing_run_with_another_config_is_not_overwritten(tiny_dataset, trained, tmp_path):
    _run(tiny_dataset, trained, tmp_path / "run")
    with pytest.raises(ValueError, match="different configuration"):
        _run(tiny_dataset, trained, tmp_path / "run", seed=1)


@pytest.mark.parametrize("args,message", [
    (["--doses", "0"], "outside (0, 100 %]"),
    (["--doses", "150"], "outside (0, 100 %]"),
    (["--doses", "abc"], "not a number"),
    (["--anatomies", "knee"], "unknown anatomy knee"),
    (["--methods", "redcnm"], "Did you mean redcnn"),
    (["--data", "/no/such/dataset"], "no such dataset folder"),
    (["--metrics", "lpips"], "unavailable"),
    (["--device", "tpu"], "is not a device"),
])
def test_bad_arguments_give_one_clear_error_and_write_nothing(args, message, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["run", "--out", str(out), *args])
    assert res.exit_code != 0
    assert message in res.output, res.output
    assert "Traceback" not in res.output
    assert not out.exists()


@pytest.mark.parametrize("metric", ["psnr", "ssim"])
def test_reference_run_every_learned_method_beats_the_input_on_every_seen_cell(metric):
    """The committed reference run (README's first command): the floor every learned method must clear."""
    from pathlib import Path

    from ldct_bench.report.leaderboard import build_leaderboard

    table = pd.read_parquet(Path(__file__).resolve().parent.parent / "results/runs/reference/results.parquet")
    lb = build_leaderboard(table, metric)
    seen = [col for col in lb.columns() if lb.seen[col[1]]]
    assert len(seen) == 6 and set(lb.mean.index) == {"ldct", "redcnn", "corediff", "wgan-mse", "founddiff"}
    gain = lb.mean[seen].drop(index="ldct") - lb.mean.loc["ldct", seen]
    assert (gain > 0).all().all(), f"{metric} at or below the input:\n{gain.round(4)}"
