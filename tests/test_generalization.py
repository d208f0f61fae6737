"""Generalization along every axis: a held-out anatomy, another dataset, and the like-with-like measures."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from ldct_bench.cli import main
from ldct_bench.config import RunConfig
from ldct_bench.data.dicom_import import import_dataset
from ldct_bench.protocol import Protocol
from ldct_bench.report import make_report
from ldct_bench.report.generalization import generalization, to_markdown
from ldct_bench.results import COLUMNS, upgrade
from ldct_bench.runner import run_matrix

from .helpers import tiny_config, tiny_overrides


def test_an_anatomy_held_out_of_training_is_scored_as_unseen(tiny_dataset, tmp_path):
    """RED-CNN and FoundDiff (DA-CLIP included) train on head and chest only; abdomen rows say so."""
    cache = tiny_dataset.root.parent  # the tiny phantoms are simulated there already
    config = RunConfig(methods=("ldct", "redcnn", "founddiff"), out=tmp_path / "run",
                       protocol=Protocol((0.1, 0.5), (0.1,), train_anatomies=("head", "chest")),
                       overrides=tiny_overrides("redcnn", "founddiff"), phantoms=tiny_config(), cache_dir=cache)
    t = run_matrix(config, progress=False, echo=lambda *a: None)
    assert set(t.loc[~t.seen_anatomy, "anatomy"]) == {"abdomen"} and set(t.loc[t.seen_anatomy, "anatomy"]) == {
        "head", "chest"}
    assert t.seen_data.all() and len(t[t.method == "founddiff"]) == len(t[t.method == "ldct"])
    for name in ("redcnn", "founddiff"):
        trained = json.loads(next((cache / "checkpoints" / name).glob("*head-s0*/manifest.json")).read_text())
        assert trained["anatomies"] == ["head", "chest"]
    from ldct_bench.methods import get_method

    weights = next((cache / "checkpoints" / "founddiff").glob("*/weights.safetensors"))
    centroids = get_method("founddiff").load(weights).daclip.anatomy_centroids
    assert centroids[:2].norm(dim=1).allclose(torch.ones(2)) and centroids[2].abs().sum() == 0  # abdomen unseen


@pytest.fixture(scope="module")
def dicom_set(tmp_path_factory):
    """pydicom's bundled real CT slice (128 x 128, 0.66 mm pixels) imported as a one-patient chest set, with 10 %
    and 25 % simulated from it."""
    from pydicom.data import get_testdata_file

    src = tmp_path_factory.mktemp("dicom")
    shutil.copy(get_testdata_file("CT_small.dcm"), src / "0.dcm")
    return import_dataset(src, source="dicom", name="ctsmall", extra_doses=(0.1, 0.25),
                          cache_dir=tmp_path_factory.mktemp("imported"), anatomy="chest")


def test_methods_trained_on_one_dataset_are_scored_on_every_patient_of_another(dicom_set, tiny_dataset, trained_cache,
                                                                               tmp_path):
    config = RunConfig(methods=("ldct", "redcnn"), out=tmp_path / "run", data=str(dicom_set.root),
                       train_data=str(tiny_dataset.root), protocol=Protocol((0.1, 0.25), (0.1,), ("chest",)),
                       overrides=tiny_overrides("redcnn"), cache_dir=trained_cache)
    t = run_matrix(config, progress=False, echo=lambda *a: None)
    assert not t.seen_data.any() and t.seen_anatomy.all()
    assert set(t.patient) == {"1CT1"}  # the set's only patient sits in its training split: all are evaluated
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["config"]["train_data"] == str(tiny_dataset.root) and manifest["config"]["data"] == str(
        dicom_set.root)
    assert "ckcache" in manifest["methods"]["redcnn"]["source"]  # the tiny-set checkpoint, not a new training
    assert manifest["dataset"]["pixel_mm"] == {"1CT1": pytest.approx(0.661468)}  # CT_small's PixelSpacing
    assert manifest["train_dataset"] == {"name": tiny_dataset.root.name, "acquisitions": ["custom"],
                                         "pixel_mm": pytest.approx(tiny_dataset.pixel_mm)}
    assert manifest["dataset"]["acquisitions"] == [dicom_set.root.name]  # an import: its own acquisition
    assert tiny_dataset.pixel_mm > 1.0  # the tiny phantoms' coarser grid: the transfer changes the pixel size
    assert (t[t.metric == "psnr"].groupby("method").value.mean() > 20).all()


def test_run_takes_the_anatomies_of_the_dataset_it_evaluates(dicom_set, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["run", "--methods", "ldct", "--data", str(dicom_set.root), "--train-data",
                                    "embedded", "--doses", "10,25", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "anatomies: chest (trained: head, chest, abdomen)" in res.output
    t = pd.read_parquet(out / "results.parquet")
    assert set(t.anatomy) == {"chest"} and not t.seen_data.any()


def _scores():
    """Per-slice PSNR of methods a, b over 2 patients x 2 slices per cell: b is 1 dB better at seen doses and
    0.5 dB worse at the unseen 25 %; a is exactly log-linear in dose."""
    rows = []
    for dose, seen in ((0.1, True), (0.25, False), (0.5, True)):
        for patient in ("p1", "p2"):
            for s in range(2):
                a = 40 + 3 * np.log2(dose / 0.1) + (0.2 if patient == "p1" else -0.2)
                b = a + (1.0 if seen else -0.5)
                for m, v in (("a", a), ("b", b)):
                    rows.append(dict(run="r", method=m, anatomy="chest", dose=dose, seen_dose=seen, seen_anatomy=True,
                                     seen_data=True, acquisition="default", seen_acquisition=True, patient=patient, slice=s,
                                     reference="full_dose",
                                     window="founddiff", metric="psnr", value=v))
    return pd.DataFrame(rows)[COLUMNS]


def test_regret_and_interpolation_equal_their_definitions():
    g = generalization(_scores())
    tab = g.table
    assert tab.loc["a", ("dose regret, seen", "mean")] == pytest.approx(1.0)  # b is 1 dB better where seen
    assert tab.loc["b", ("dose regret, seen", "mean")] == pytest.approx(0.0)
    assert tab.loc["b", ("dose regret, unseen", "mean")] == pytest.approx(0.5)
    assert tab.loc["a", ("dose interpolation", "mean")] == pytest.approx(0.0, abs=1e-9)  # a is log-linear
    assert tab.loc["b", ("dose interpolation", "mean")] == pytest.approx(-1.5)  # 0.5 below where it was 1 above
    assert set(c[0] for c in tab.columns) == {"dose regret, seen", "dose regret, unseen", "dose interpolation"}
    lo, hi = tab.loc["a", ("dose regret, seen", "lo")], tab.loc["a", ("dose regret, seen", "hi")]
    assert lo <= 1.0 <= hi and g.n_patients == 2


def test_the_report_writes_the_generalization_table_and_figure(tmp_path):
    from ldct_bench.results import RunStore

    st = RunStore(tmp_path / "r")
    t = _scores()
    for (m, d), cell in t.groupby(["method", "dose"]):
        st.write_cell(m, "chest", d, cell)
    st.write_manifest({"config": {}})
    st.consolidate()
    files = {p.name for p in make_report([st.root], tmp_path / "rep", metrics=("psnr",))}
    assert {"generalization.md", "generalization.csv", "generalization.tex", "generalization.png"} <= files
    md = (tmp_path / "rep" / "generalization.md").read_text()
    assert "| b | 0.00 [0.00, 0.00] | 0.50 [0.50, 0.50] | -1.50 [-1.50, -1.50] |" in md
    assert "patient-cluster bootstrap" in md and "Generalization" in (tmp_path / "rep" / "report.html").read_text()


def test_old_stores_read_with_what_their_flags_could_only_have_meant():
    old = _scores().drop(columns=["seen_anatomy", "seen_data", "reference", "acquisition", "seen_acquisition"])
    old = old.rename(columns={"seen_dose": "seen"})
    new = upgrade(old)
    assert list(new.columns) == COLUMNS and new.seen_anatomy.all() and new.seen_data.all()
    assert new.seen_acquisition.all() and set(new.acquisition) == {"unrecorded"}
    assert (new.seen_dose == old.seen).all() and set(new.reference) == {"full_dose"}


def test_the_oracle_gap_is_the_specialist_minus_the_generalist_at_each_unseen_dose():
    t = _scores()
    special = t[(t.method == "b") & (t.dose == 0.25)].assign(method="b@25%", seen_dose=True, value=lambda d: d.value + 2)
    g = generalization(pd.concat([t, special], ignore_index=True))
    assert list(g.table.index) == ["a", "b"]  # the specialist is a yardstick, not a row
    assert g.table.loc["b", ("oracle gap at 25%", "mean")] == pytest.approx(2.0)
    assert np.isnan(g.table.loc["a", ("oracle gap at 25%", "mean")])
    assert g.table.loc["b", ("dose regret, unseen", "mean")] == pytest.approx(0.5)  # regret ignores specialists
    assert to_markdown(g).splitlines()[-2].endswith("| – |")  # a has no specialist: a dash, not 'nan'
    assert to_markdown(g).splitlines()[-1].endswith("| 2.00 [2.00, 2.00] |")


def test_oracle_trains_a_specialist_per_unseen_dose_and_scores_it_only_there(tiny_dataset, trained_cache, tmp_path):
    from ldct_bench.fanout import unit_states
    from ldct_bench.results import RunStore

    config = RunConfig(methods=("ldct", "redcnn"), out=tmp_path / "run", data=str(tiny_dataset.root),
                       protocol=Protocol((0.1, 0.25), (0.1,), ("chest",)), overrides=tiny_overrides("redcnn"),
                       cache_dir=trained_cache, oracle=True)
    assert [e.label for e in config.entries()] == ["ldct", "redcnn", "redcnn@25%"]
    t = run_matrix(config, progress=False, echo=lambda *a: None)
    special = t[t.method == "redcnn@25%"]
    assert set(special.dose) == {0.25} and special.seen_dose.all()
    assert len(special) == len(t[(t.method == "redcnn") & (t.dose == 0.25)])
    trained = json.loads(next((trained_cache / "checkpoints" / "redcnn").glob("*seen25-*/manifest.json")).read_text())
    assert trained["doses"] == [0.25]
    assert unit_states(RunStore(config.out), config.entries()).state.tolist() == ["done"] * 3
    make_report([config.out], tmp_path / "rep", formats=("md",), metrics=("psnr",), draw=False)
    assert "redcnn@25%" not in (tmp_path / "rep" / "leaderboard.md").read_text()
    assert "oracle gap at 25%" in (tmp_path / "rep" / "generalization.md").read_text()
