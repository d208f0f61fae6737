"""`ldct-bench run` end to end on the tiny dataset: rows, manifest, resume, determinism, training on an empty
cache, --set, bad arguments."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from ldct_bench.cli import main
from ldct_bench.config import RunConfig, parse_overrides
from ldct_bench.protocol import Protocol
from ldct_bench.runner import run_matrix

from .conftest import TRAINED_ANATOMIES
from .helpers import TINY_DOSES, committed_methods, tiny_config, tiny_overrides

PROTO = Protocol((0.1, 0.25), (0.1,), TRAINED_ANATOMIES)


def _config(tiny_dataset, cache, out, **kw) -> RunConfig:
    return RunConfig(methods=("ldct", "redcnn"), out=out, protocol=PROTO, data=str(tiny_dataset.root), cache_dir=cache,
                     overrides=tiny_overrides("redcnn"), **kw)


def _run(tiny_dataset, cache, out, **kw):
    return run_matrix(_config(tiny_dataset, cache, out, **kw), progress=False, echo=lambda *a: None)


def test_tiny_run_rows_and_manifest(tiny_dataset, trained_cache, tmp_path):
    table = _run(tiny_dataset, trained_cache, tmp_path / "run")
    # 2 methods x 2 doses x 4 slices x 2 references x 4 chest windows x 3 metrics
    assert len(table) == 2 * 2 * 4 * 2 * 4 * 3
    assert not table.duplicated(["method", "anatomy", "dose", "patient", "slice", "reference", "window", "metric"]).any()
    assert set(table.loc[table.dose == 0.1, "seen_dose"]) == {True}
    assert set(table.loc[table.dose == 0.25, "seen_dose"]) == {False}
    assert table["seen_anatomy"].all() and table["seen_data"].all()
    assert set(table.window) == {"full", "founddiff", "lung", "abdomen"}
    man = (tmp_path / "run" / "manifest.json").read_text()
    for key in ('"git_commit"', '"versions"', '"hardware"', '"timings"', '"protocol"', '"seed"', '"redcnn.denoise_s"'):
        assert key in man
    manifest = json.loads(man)
    assert manifest["config"]["overrides"]["redcnn"]["filters"] == 8  # --set, recorded
    assert manifest["methods"]["redcnn"]["config"]["filters"] == 8 and "ckcache" in manifest["methods"]["redcnn"]["source"]
    from ldct_bench.data.dataset import sha256_file  # which weights exactly (#28.4)

    assert manifest["methods"]["redcnn"]["sha256"] == sha256_file(Path(manifest["methods"]["redcnn"]["source"]))
    stored = pd.read_parquet(tmp_path / "run" / "results.parquet")
    pd.testing.assert_frame_equal(stored.reset_index(drop=True), table.reset_index(drop=True))


def test_interrupted_run_resumes_without_duplicates(tiny_dataset, trained_cache, tmp_path, monkeypatch):
    full = _run(tiny_dataset, trained_cache, tmp_path / "ref")
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
        _run(tiny_dataset, trained_cache, tmp_path / "run")
    cells = sorted(p.name for p in (tmp_path / "run" / "cells").glob("*/*.parquet"))
    assert len(cells) == 3  # 2 ldct cells + the first redcnn cell; nothing half-written
    assert not list((tmp_path / "run").rglob("*.tmp"))
    monkeypatch.setattr(RedCNN, "denoise", real)
    resumed = _run(tiny_dataset, trained_cache, tmp_path / "run")
    cols = ["method", "anatomy", "dose", "patient", "slice", "reference", "window", "metric", "value"]
    pd.testing.assert_frame_equal(resumed[cols].reset_index(drop=True), full[cols].reset_index(drop=True))


def test_same_seed_gives_identical_numbers(tiny_dataset, trained_cache, tmp_path):
    a = _run(tiny_dataset, trained_cache, tmp_path / "a")
    b = _run(tiny_dataset, trained_cache, tmp_path / "b")
    assert a["value"].tolist() == b["value"].tolist()


def test_an_existing_run_with_another_config_is_not_overwritten(tiny_dataset, trained_cache, tmp_path):
    _run(tiny_dataset, trained_cache, tmp_path / "run")
    with pytest.raises(ValueError, match="different configuration"):
        _run(tiny_dataset, trained_cache, tmp_path / "run", seed=1)


@pytest.mark.parametrize("cloned", [False, True])
def test_a_rerun_scores_again_a_method_whose_checkpoint_changed(tiny_dataset, trained_cache, tmp_path, cloned):
    """A run folder made before a checkpoint was retrained: the re-run scores that method again (and only it),
    as a fresh run with the new weights would, and its manifest says what it replaced. So too for a run as a clone
    holds it, with results.parquet and no per-cell files (they once came back empty: every method scored again)."""
    import shutil

    from baselines.redcnn import RedCNN
    from ldct_bench.data.dataset import sha256_file

    before = _run(tiny_dataset, trained_cache, tmp_path / "run")
    if cloned:
        shutil.rmtree(tmp_path / "run" / "cells")
    cache = tmp_path / "retrained"
    shutil.copytree(trained_cache, cache)
    weights = next((cache / "checkpoints" / "redcnn").glob("*/weights.safetensors"))
    old = sha256_file(weights)
    method = RedCNN.load(weights)
    with torch.no_grad():
        for p in method.net.parameters():
            p.mul_(0.9)  # other weights, as a retraining leaves them
    method.save(weights)
    record = json.loads((weights.parent / "manifest.json").read_text())
    (weights.parent / "manifest.json").write_text(json.dumps({**record, "sha256": sha256_file(weights)}))
    said = []
    after = run_matrix(_config(tiny_dataset, cache, tmp_path / "run"), progress=False, echo=said.append)
    fresh = _run(tiny_dataset, cache, tmp_path / "fresh")
    cols = ["method", "anatomy", "dose", "patient", "slice", "reference", "window", "metric", "value"]
    pd.testing.assert_frame_equal(after[cols].reset_index(drop=True), fresh[cols].reset_index(drop=True))
    red = before.method == "redcnn"
    assert (before.loc[red, "value"].to_numpy() != after.loc[red.to_numpy(), "value"].to_numpy()).mean() > 0.5
    assert before.loc[~red, "value"].tolist() == after.loc[~red.to_numpy(), "value"].tolist()
    assert [s.split(":")[0] for s in said if "changed" in s] == ["redcnn"] and "skipping" in said[0]  # ldct kept
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["methods"]["redcnn"]["sha256"] == sha256_file(weights) != old
    assert [(r["method"], r["was_sha256"]) for r in manifest["rescored"]] == [("redcnn", old)]
    said.clear()
    run_matrix(_config(tiny_dataset, cache, tmp_path / "run"), progress=False, echo=said.append)
    assert not [s for s in said if "changed" in s]  # scored with these weights now: nothing to redo


def test_rescore_makes_the_named_methods_scores_again_and_keeps_the_rest(tiny_dataset, trained_cache, tmp_path):
    """--rescore redcnn on a finished run: its cells are written anew (same weights, same numbers, new timings), the
    manifest records the rescoring with the unchanged sha256, ldct's cells are not touched; a method the run does not
    score is one sentence."""
    out = tmp_path / "run"
    before = _run(tiny_dataset, trained_cache, out)
    cells = {p.relative_to(out): p.stat().st_mtime_ns for p in (out / "cells").rglob("*.parquet")}
    sha = json.loads((out / "manifest.json").read_text())["methods"]["redcnn"]["sha256"]
    said = []
    after = run_matrix(_config(tiny_dataset, trained_cache, out, rescore=("redcnn",)), progress=False, echo=said.append)
    assert [s for s in said if "rescore" in s] == ["redcnn: --rescore asks for its scores to be made again; scoring "
                                                   "it again"]
    assert before["value"].tolist() == after["value"].tolist()
    now = {p.relative_to(out): p.stat().st_mtime_ns for p in (out / "cells").rglob("*.parquet")}
    assert now.keys() == cells.keys() and len(cells) == 4
    assert {p.parts[1] for p in now if now[p] != cells[p]} == {"redcnn"}  # rewritten: redcnn's, and only they
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(r["method"], r["was_sha256"]) for r in manifest["rescored"]] == [("redcnn", sha)]
    assert manifest["methods"]["redcnn"]["sha256"] == sha and "redcnn.denoise_s" in manifest["timings"]
    with pytest.raises(ValueError, match="--rescore tv: not among this run's --methods"):
        _config(tiny_dataset, trained_cache, out, rescore=("tv",))


@pytest.mark.parametrize("name,text", [("iq.parquet", b"not parquet"), ("perception.parquet", None)])
def test_a_cloned_run_with_a_damaged_side_table_says_so_and_writes_nothing(tiny_dataset, trained_cache, tmp_path, name,
                                                                         text):
    """The tables a re-run reads back to resume are input: one that is not parquet, or lacks the columns it is
    grouped by, is one sentence naming it, and nothing in the folder changes (it once was a pyarrow traceback)."""
    import shutil

    out = tmp_path / "run"
    _run(tiny_dataset, trained_cache, out)
    shutil.rmtree(out / "cells")  # as a clone holds it
    if text is None:
        pd.DataFrame({"patient": ["p0"]}).to_parquet(out / name)
    else:
        (out / name).write_bytes(text)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=f"{name} (is not a readable table|lacks the column)"):
        run_matrix(_config(tiny_dataset, trained_cache, out), progress=False, echo=lambda *a: None)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_run_on_an_empty_cache_simulates_trains_and_scores(tmp_path):
    """The embedded data with no cache at all: the test split is simulated, then the training splits, and the
    method trains on the dataset that holds them (it once trained on a dataset opened before they existed)."""
    config = RunConfig(methods=("redcnn",), out=tmp_path / "run", protocol=Protocol((0.1,), (0.1,), ("head",)), seed=3,
                       overrides=parse_overrides(["redcnn.iterations=20", "redcnn.val_every=10"], ("redcnn",)),
                       phantoms=tiny_config(), cache_dir=tmp_path / "cache")
    table = run_matrix(config, progress=False, echo=lambda *a: None)
    assert len(table) == 4 * 2 * 4 * 3 and table["value"].notna().all()  # 4 slices x 2 references x 4 windows x 3
    trained = json.loads(next((tmp_path / "cache" / "checkpoints" / "redcnn").glob("*/manifest.json")).read_text())
    assert trained["complete"] and trained["iterations"] == {"main": 20} and trained["seed"] == 3
    assert [r["step"] for r in trained_log(tmp_path)] == [10, 20]
    again = run_matrix(replace(config, out=tmp_path / "again"), progress=False, echo=lambda *a: None)
    assert again["value"].tolist() == table["value"].tolist()  # the checkpoint is found, not trained anew


def trained_log(tmp_path):
    import csv

    path = next((tmp_path / "cache" / "checkpoints" / "redcnn").glob("*/train_log.csv"))
    return [dict(r, step=int(r["step"])) for r in csv.DictReader(open(path))]


@pytest.mark.parametrize("args,message", [
    (["--doses", "0"], "outside (0, 100 %]"),
    (["--doses", "150"], "outside (0, 100 %]"),
    (["--doses", "100"], "is the full dose, which every cell is scored against"),
    (["--doses", "1e-9"], "rounds to 0"),
    (["--seed", "-1"], "--seed"),
    (["--doses", "abc"], "not a number"),
    (["--anatomies", "knee"], "unknown anatomy knee"),
    (["--methods", "redcnm"], "Did you mean redcnn"),
    (["--data", "/no/such/dataset"], "no such dataset folder"),
    (["--metrics", "lpips"], "unavailable"),
    (["--device", "tpu"], "is not a device"),
    (["--methods", "redcnn", "--set", "corediff.iterations=5"], "'corediff' is not one of this command's methods"),
    (["--methods", "redcnn", "--set", "redcnn.iteratons=5"], "no config field 'iteratons'; did you mean iterations"),
    (["--methods", "redcnn", "--set", "redcnn.iterations=abc"], "iterations takes an integer in [1, 1e+08], not 'abc'"),
    (["--methods", "redcnn", "--set", "redcnn.iterations=2.5"], "iterations takes an integer"),
    (["--methods", "redcnn", "--set", "redcnn.balance_cells=maybe"], "balance_cells takes true or false"),
    (["--methods", "redcnn", "--set", "redcnn.iterations"], "write METHOD.FIELD=VALUE"),
    (["--methods", "ldct", "--set", "ldct.iterations=5"], "no config field 'iterations'; it has no settings"),
    (["--methods", "ldct", "--iq", "--executor", "local"], "--iq runs in this process"),
    (["--methods", "ldct", "--iq", "--iq-realisations", "4"], "--iq-realisations"),
])
def test_bad_arguments_give_one_clear_error_and_write_nothing(args, message, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["run", "--out", str(out), "--cache-dir", str(tmp_path / "c"), *args])
    assert res.exit_code != 0
    assert message in res.output, res.output
    assert "Traceback" not in res.output and res.output.count("Error:") == 1
    assert not out.exists() and not (tmp_path / "c").exists()


def test_the_committed_checkpoints_beat_the_input_on_every_seen_cell_of_fresh_patients(reference_sample):
    """The floor of the reference run, on patients simulated here afresh (the first slice of each, with its real
    neighbour): each committed learned method, loaded and run by this code, beats the low-dose input in PSNR and
    SSIM in every seen (anatomy, dose) cell against the truth, and against the noisy full-dose scan too, except
    WGAN-MSE, whose adversarial term trades the full-dose scan's noise texture for its own (chest 50 %: -0.27 dB
    against the full dose, +2.80 against the truth), and the bilateral filter, which smooths the noise the two scans
    share. `shortfall` names the cells where a committed checkpoint is measured below its input against the truth;
    each must stay below there (a checkpoint that recovers shortens the list). None since the clinical checkpoints;
    the closest is FoundDiff's chest 50 %, +2.03 dB."""
    from ldct_bench.checkpoints import committed_checkpoints
    from ldct_bench.evaluate import score_rows
    from ldct_bench.methods import get_method

    learned = committed_methods()
    assert {"corediff", "founddiff", "redcnn", "wgan-mse"} <= set(learned), learned
    scores = []
    for name in ("ldct", *learned):
        found = committed_checkpoints(name) if name != "ldct" else [None]
        assert len(found) == 1, f"{name}: expected one committed checkpoint, found {found}"
        cls = get_method(name)
        method = (cls.load(found[0]) if found[0] else cls()).for_inference()
        for cell in Protocol().cells():
            if cell.seen_dose:
                pairs = reference_sample.pairs([cell.anatomy], [cell.dose], "test", context=get_method(name).context,
                                               max_slices=1, truth=True)
                pred = torch.cat([method.denoise(pairs.ld[i:i + 4]) for i in range(0, len(pairs), 4)])
                scores.append(score_rows("fresh", name, cell, pairs, pred, ("psnr", "ssim")))
    t = pd.concat(scores)
    means = t[t.window == "founddiff"].groupby(["reference", "metric", "anatomy", "dose", "method"])["value"].mean()
    means = means.unstack()
    gain = means[list(learned)].sub(means["ldct"], axis=0)
    print(gain.round(4).to_string())
    assert len(gain) == 2 * 2 * 3 * 2, gain
    shortfall: list[tuple[str, str, float, str]] = []
    truth = gain.loc["truth"].stack()
    assert all(truth.loc[cell] <= 0 for cell in shortfall), f"no longer short; shorten the list:\n{gain.round(4)}"
    assert (truth.drop(shortfall) > 0).all(), f"at or below the input:\n{gain.round(4)}"
    # against the noisy full dose a filter that removes the noise the two scans share scores below the input at
    # 50 %, where that shared noise is most of the error: the bilateral filter's nine widths smooth it away
    fidelity = gain.loc["full_dose"].drop(columns=["wgan-mse", "bilateral"])
    assert (fidelity > 0).all().all(), f"at or below the input:\n{gain.round(4)}"


def test_lower_doses_are_nested_in_the_full_dose_and_scored_against_the_truth_too(tiny_dataset, tmp_path):
    """The input's error against the full dose is its error against the truth times (1 - d): the full-dose scan
    carries the noise the lower dose shares, as in the Mayo data (independent draws would give 1 + d)."""
    proto = Protocol(TINY_DOSES, (0.1,))
    config = RunConfig(methods=("ldct",), out=tmp_path / "run", protocol=proto, data=str(tiny_dataset.root))
    t = run_matrix(config, progress=False, echo=lambda *a: None)
    assert set(t.reference) == {"full_dose", "truth"}
    mse = (t[(t.metric == "rmse") & (t.window == "full")].assign(sq=lambda d: d.value**2)
           .groupby(["dose", "reference"]).sq.mean().unstack())
    ratio = mse.full_dose / (mse.truth * (1 - mse.index))
    assert ((ratio - 1).abs() < 0.15).all(), ratio
