"""Security: nothing from a run folder is executed, and nothing is written outside the folder a command was given."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ldct_bench.cli import main
from ldct_bench.plan import resolve
from ldct_bench.results import COLUMNS, RunStore


class _Trap:
    """Unpickling this creates `path`: proof that a pickle from the folder was loaded."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_status_never_unpickles_a_received_run_folder(tmp_path):
    out, trap = tmp_path / "received", tmp_path / "executed"
    (out / "jobs").mkdir(parents=True)
    (out / "jobs.json").write_text(json.dumps({"ldct/chest": {"job_id": "999999999", "executor": "local"}}))
    (out / "jobs" / "999999999_0_result.pkl").write_bytes(pickle.dumps(("success", _Trap(trap))))
    res = CliRunner().invoke(main, ["run", "--status", "--out", str(out), "--methods", "ldct", "--doses", "10",
                                    "--train-doses", "10", "--anatomies", "chest"])
    assert res.exit_code == 0, res.output
    assert not trap.exists()
    assert " killed " in res.output  # no outcome JSON and no such process: it died


def test_report_writes_nothing_outside_its_folder_whatever_the_store_holds(tmp_path):
    st = RunStore(tmp_path / "runs" / "r")
    evil = "x/../../../../../ESCAPED"
    rows = [dict(run="r", method=m, anatomy=evil, dose=d, seen_dose=d == 0.1, seen_anatomy=True, seen_data=True,
                 acquisition="default", seen_acquisition=True, patient=p, slice=0, reference="full_dose",
                 window="founddiff", metric="psnr", value=v)
            for m, v in (("ldct", 40.0), ("../../EVIL_METHOD", 41.0)) for d in (0.1, 0.25) for p in ("p1", "p2")]
    t = pd.DataFrame(rows)[COLUMNS]
    for (m, d), cell in t.groupby(["method", "dose"]):
        st.write_cell(m, evil, d, cell)
        st.write_examples(m, evil, d, {"pred": np.zeros((1, 8, 8))})
    st.write_examples("_input", evil, 0.1, {"ld": np.zeros((1, 8, 8)), "fd": np.zeros((1, 8, 8))})
    st.write_manifest({"config": {}})
    st.consolidate()
    before = {p for p in tmp_path.rglob("*")}
    assert all(p.resolve().is_relative_to(st.root.resolve()) for p in before if p.is_file())  # the store's own writes
    from ldct_bench.report import make_report

    written = make_report([st.root], tmp_path / "runs" / "rep", formats=("md", "html"), metrics=("psnr",))
    new = {p for p in tmp_path.rglob("*")} - before
    assert new and all(p.resolve().is_relative_to((tmp_path / "runs" / "rep").resolve()) for p in new)
    assert any("ESCAPED" in p.name for p in new)  # the anatomy's figure was drawn, inside the report folder
    assert all(p.resolve().is_relative_to((tmp_path / "runs" / "rep").resolve()) for p in written)


@pytest.mark.parametrize("name", ["../outside", "a/b", ".hidden", ".."])
def test_an_import_name_that_is_not_one_folder_is_refused_before_anything_is_read(name, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    res = CliRunner().invoke(main, ["data", "import", "--source", "dicom", "--root", str(src), "--name", name,
                                    "--cache-dir", str(tmp_path / "cache")])
    assert res.exit_code != 0 and "one plain folder name" in res.output
    assert not (tmp_path / "outside").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("args, message", [
    (["--iterations", "-5"], "--iterations"),
    (["--iterations", "0"], "--iterations"),
    (["--seed", "-1"], "--seed"),
])
def test_train_refuses_a_budget_or_seed_below_range_by_name(args, message, tmp_path):
    res = CliRunner().invoke(main, ["train", "--method", "redcnn", "--cache-dir", str(tmp_path / "c"), *args])
    assert res.exit_code != 0 and message in res.output and not (tmp_path / "c").exists()


def test_an_out_folder_blocked_by_a_file_is_one_sentence_before_any_work(tmp_path):
    (tmp_path / "file").write_text("")
    res = CliRunner().invoke(main, ["run", "--methods", "ldct", "--doses", "10", "--train-doses", "10",
                                    "--anatomies", "chest", "--out", str(tmp_path / "file" / "sub"),
                                    "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "Error: 20" not in res.output and "is a file, not a folder" in res.output, res.output
    assert not (tmp_path / "c").exists()  # said before any data was simulated


def test_rerunning_a_finished_run_leaves_its_manifest_as_it_was(tiny_dataset, tmp_path):
    from ldct_bench.config import RunConfig
    from ldct_bench.protocol import Protocol
    from ldct_bench.runner import run_matrix

    config = RunConfig(methods=("ldct",), out=tmp_path / "run", protocol=Protocol((0.1,), (0.1,), ("chest",)),
                       data=str(tiny_dataset.root))
    first = run_matrix(config, progress=False, echo=lambda *a: None)
    before = (config.out / "manifest.json").read_bytes()
    said = []
    again = run_matrix(config, progress=False, echo=said.append)
    assert (config.out / "manifest.json").read_bytes() == before and json.loads(before)["timings"]["total_s"] > 0
    pd.testing.assert_frame_equal(first, again)
    assert said == ["ldct: all 1 cells already done, skipping"]


def test_evaluating_a_subset_of_anatomies_uses_the_all_anatomy_checkpoint(monkeypatch, tmp_path):
    import ldct_bench.runner
    from ldct_bench.checkpoints import REFERENCE_DIR, find_checkpoint

    seen = {}

    def capture(config, **kwargs):
        seen["config"] = config
        raise ValueError("captured")

    monkeypatch.setattr(ldct_bench.runner, "run_matrix", capture)
    CliRunner().invoke(main, ["run", "--methods", "redcnn", "--anatomies", "head", "--out", str(tmp_path / "r")])
    config = seen["config"]
    assert config.protocol.anatomies == ("head",)
    assert find_checkpoint(resolve(config).entry("redcnn").job).parent.parent == REFERENCE_DIR / "redcnn"


def test_an_unknown_method_is_refused_before_any_data_is_simulated(tmp_path):
    res = CliRunner().invoke(main, ["train", "--method", "no-such-method", "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code != 0 and "unknown method 'no-such-method'" in res.output and not (tmp_path / "c").exists()


@pytest.fixture(scope="module")
def ct_and_mr(tmp_path_factory):
    """pydicom's real CT slice, and the same slice relabelled as MR (rescale tags and all)."""
    import shutil

    import pydicom
    from pydicom.data import get_testdata_file

    src = tmp_path_factory.mktemp("ctmr")
    shutil.copy(get_testdata_file("CT_small.dcm"), src / "ct.dcm")
    mr = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    mr.Modality = "MR"
    mr.SOPInstanceUID = mr.SOPInstanceUID + ".9"
    mr.SeriesInstanceUID = mr.SeriesInstanceUID + ".9"
    mr.save_as(src / "mr.dcm")
    return src


def test_an_mr_image_is_skipped_and_a_set_without_test_patients_is_refused(ct_and_mr, tmp_path):
    from ldct_bench.config import RunConfig
    from ldct_bench.data.dicom_import import import_dataset
    from ldct_bench.protocol import Protocol
    from ldct_bench.runner import run_matrix

    ds = import_dataset(ct_and_mr, source="dicom", name="one", extra_doses=(0.25,), cache_dir=tmp_path / "c",
                        anatomy="chest")
    assert ds.manifest["skipped"]["images that are not CT (Modality)"] == 1
    assert sum(len(ds.patients("chest", s)) for s in ("train", "val", "test")) == 1
    config = RunConfig(methods=("ldct",), out=tmp_path / "run", data=str(ds.root),
                       protocol=Protocol((0.25,), (0.25,), ("chest",)))
    assert ds.patients("chest", "train") and not ds.patients("chest", "test")  # one patient: training data only
    with pytest.raises(ValueError, match="--train-data embedded"):
        run_matrix(config, progress=False, echo=lambda *a: None)
    assert not config.out.exists()
    trained_elsewhere = RunConfig(methods=("ldct",), out=tmp_path / "run2", data=str(ds.root), train_data="embedded",
                                  protocol=Protocol((0.25,), (0.25,), ("chest",)))
    t = run_matrix(trained_elsewhere, progress=False, echo=lambda *a: None)
    assert t.patient.nunique() == 1 and not t.seen_data.any()


def test_a_failed_import_leaves_no_dataset_behind(monkeypatch, tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    from ldct_bench.data import dicom_import

    src = tmp_path / "two"
    src.mkdir()
    for i in range(2):
        d = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        d.PatientID, d.SeriesInstanceUID, d.SOPInstanceUID = f"P{i}", f"{d.SeriesInstanceUID}.{i}", f"{d.SOPInstanceUID}.{i}"
        d.save_as(src / f"{i}.dcm")
    calls = []
    real = dicom_import.read_volume

    def second_fails(*args):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(*args)

    monkeypatch.setattr(dicom_import, "read_volume", second_fails)
    with pytest.raises(OSError, match="disk full"):
        dicom_import.import_dataset(src, name="half", cache_dir=tmp_path / "c", anatomy="chest")
    assert len(calls) == 2 and list((tmp_path / "c").iterdir()) == []  # the first patient was written, then removed
    res = CliRunner().invoke(main, ["data", "info", "--cache-dir", str(tmp_path / "c")])
    assert "no datasets cached" in res.output
    monkeypatch.setattr(dicom_import, "read_volume", real)
    ds = dicom_import.import_dataset(src, name="half", cache_dir=tmp_path / "c", anatomy="chest")
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["half"] and len(ds.patients("chest", "test")) == 1


def test_a_damaged_cache_file_is_named_with_what_to_do(ct_and_mr, tmp_path):
    from ldct_bench.config import RunConfig
    from ldct_bench.data.dicom_import import import_dataset
    from ldct_bench.protocol import Protocol
    from ldct_bench.runner import run_matrix

    ds = import_dataset(ct_and_mr, source="dicom", name="dmg", extra_doses=(0.25,), cache_dir=tmp_path / "c",
                        anatomy="chest")
    patient = ds.patients("chest", "train")[0]
    low = ds.root / "chest" / patient / "d0.2500.npy"
    arr = np.load(low)
    arr[0, 5, 5] = np.nan
    np.save(low, arr)  # as if the DICOM it came from was damaged: its manifest vouches for it
    from ldct_bench.data.dataset import sha256_file

    manifest = json.loads((ds.root / "manifest.json").read_text())
    manifest["files"][f"chest/{patient}/d0.2500.npy"] = sha256_file(low)
    (ds.root / "manifest.json").write_text(json.dumps(manifest))
    config = RunConfig(methods=("ldct",), out=tmp_path / "run", data=str(ds.root), train_data="embedded",
                       protocol=Protocol((0.25,), (0.25,), ("chest",)))
    with pytest.raises(RuntimeError, match="low-dose input of chest at 25% holds NaN/inf: the dataset is damaged"):
        run_matrix(config, progress=False, echo=lambda *a: None)
    full = ds.root / "chest" / patient / "full.npy"
    for damaged in (full.read_bytes()[:1000], b"\x93NUMPY\x01\x00garbage" + b" " * 200):  # truncated; a bad header
        full.write_bytes(damaged)
        with pytest.raises(ValueError, match=f"cached array {full} does not match .*import the dataset again") as err:
            ds.volume("chest", patient, "full")
        assert "mmap" not in str(err.value) and "allow_pickle" not in str(err.value)


def _together(*codes: str) -> list:
    """Start each Python snippet as its own process at once; their completed processes."""
    import subprocess
    import sys

    procs = [subprocess.Popen([sys.executable, "-c", c], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in codes]
    return [(p.wait(timeout=600), p.stdout.read()) for p in procs]


def test_concurrent_simulations_and_runs_share_one_cache_and_one_folder(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "run"
    simulate = ("from tests.helpers import tiny_config; from ldct_bench.data.dataset import LDCTDataset; "
                f"LDCTDataset.embedded(tiny_config(), doses=({{}},), splits=('test',), cache_dir=r'{cache}', "
                "progress=False)")
    done = _together(simulate.format(0.1), simulate.format(0.25))
    assert all(rc == 0 for rc, _ in done), done
    from ldct_bench.data.dataset import LDCTDataset

    ds = LDCTDataset(next(cache.glob("embedded-*")))
    assert ds.doses() == [0.1, 0.25]  # neither simulation lost the other's dose
    run = ("from pathlib import Path; from ldct_bench.config import RunConfig; from ldct_bench.protocol import "
           "Protocol; from tests.helpers import tiny_config; from ldct_bench.runner import run_matrix; "
           f"run_matrix(RunConfig(methods=('ldct',), out=Path(r'{out}'), protocol=Protocol((0.1, 0.25), (0.1,)), "
           f"phantoms=tiny_config(), cache_dir=Path(r'{cache}')), progress=False)")
    done = _together(run, run)
    assert all(rc == 0 for rc, _ in done), done
    assert sum("already done, skipping" in text for _, text in done) == 1  # the second (waiting or late) did nothing
    t = pd.read_parquet(out / "results.parquet")
    assert not t.duplicated(["method", "anatomy", "dose", "patient", "slice", "reference", "window", "metric"]).any()
    assert len(t.drop_duplicates(["anatomy", "dose"])) == 6 and "finished" in json.loads(
        (out / "manifest.json").read_text())


def _zero_bytes(path, start=256, n=2048):
    data = bytearray(path.read_bytes())
    data[start:start + n] = bytes(n)
    path.write_bytes(bytes(data))


def test_a_zeroed_range_in_a_phantom_array_is_resimulated_and_scores_as_the_clean_cache(tmp_path):
    from ldct_bench.config import RunConfig
    from ldct_bench.data.dataset import LDCTDataset, sha256_file
    from ldct_bench.protocol import Protocol
    from ldct_bench.runner import run_matrix

    from .helpers import tiny_config

    def scores(out):
        config = RunConfig(methods=("ldct",), out=tmp_path / out, protocol=Protocol((0.25,), (0.25,), ("chest",)),
                           phantoms=tiny_config(), cache_dir=tmp_path / "c")
        return run_matrix(config, progress=False, echo=lambda *a: None).drop(columns="run")

    clean = scores("clean")
    ds = LDCTDataset(next((tmp_path / "c").glob("embedded-*")))
    rel = next(k for k in ds.manifest["files"] if k.startswith("chest/") and k.endswith("d0.2500.npy"))
    _zero_bytes(ds.root / rel)
    with pytest.raises(ValueError, match="does not match the sha256 its manifest recorded .*simulate it again"):
        ds.volume(*rel[:-4].split("/"))
    pd.testing.assert_frame_equal(scores("again"), clean)  # re-simulated, bit for bit
    assert sha256_file(ds.root / rel) == ds.manifest["files"][rel]


def test_a_damaged_import_or_a_tampered_checkpoint_is_refused_in_one_sentence(ct_and_mr, tmp_path):
    import shutil

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from ldct_bench.checkpoints import REFERENCE_DIR
    from ldct_bench.data.dicom_import import import_dataset
    from ldct_bench.methods import get_method

    ds = import_dataset(ct_and_mr, source="dicom", name="imp", cache_dir=tmp_path / "c", anatomy="chest")
    patient = ds.patients("chest", "train")[0]
    _zero_bytes(ds.root / "chest" / patient / "full.npy")
    with pytest.raises(ValueError, match="full.npy does not match the sha256 .*ldct-bench data import"):
        ds.volume("chest", patient, "full")

    folder = tmp_path / "ck"
    shutil.copytree(next((REFERENCE_DIR / "redcnn").iterdir()), folder)
    assert get_method("redcnn").load(folder / "weights.safetensors").n_parameters() > 0  # intact: loads
    state = load_file(str(folder / "weights.safetensors"))
    name = next(iter(state))
    state[name] = state[name] * 100
    with safe_open(str(folder / "weights.safetensors"), framework="pt") as f:
        meta = f.metadata()
    save_file(state, str(folder / "weights.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="does not match the sha256 in .*manifest.json .*retrain"):
        get_method("redcnn").load(folder / "weights.safetensors")


def test_a_checkpoint_with_broken_metadata_and_a_missing_array_are_one_sentence(ct_and_mr, tmp_path):
    import torch
    from safetensors.torch import save_file

    from ldct_bench.data.dicom_import import import_dataset
    from ldct_bench.methods import get_method

    save_file({"w": torch.zeros(1)}, str(tmp_path / "w.safetensors"), metadata={"method": "redcnn", "config": "{oops"})
    with pytest.raises(ValueError, match="carries no readable config"):
        get_method("redcnn").load(tmp_path / "w.safetensors")
    ds = import_dataset(ct_and_mr, source="dicom", name="gone", cache_dir=tmp_path / "c", anatomy="chest")
    patient = ds.patients("chest", "train")[0]
    (ds.root / "chest" / patient / "full.npy").unlink()
    with pytest.raises(ValueError, match="full.npy is missing; import the dataset again"):
        ds.volume("chest", patient, "full")


def test_an_out_that_is_a_file_and_a_broken_checkpoint_at_run_time_are_one_sentence(tmp_path):
    import click
    import torch

    from ldct_bench.cli import friendly
    from ldct_bench.config import RunConfig
    from ldct_bench.data.dataset import Pairs
    from ldct_bench.evaluate import denoise_all
    from ldct_bench.methods import get_method

    (tmp_path / "file").write_text("")
    res = CliRunner().invoke(main, ["run", "--methods", "ldct", "--out", str(tmp_path / "file"),
                                    "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code != 0 and "is a file, not a folder" in res.output and "Traceback" not in res.output

    class Broken(get_method("ldct")):  # what a checkpoint with NaN weights gives
        def denoise(self, ld):
            return torch.full_like(ld[:, :1], float("nan"))

    pairs = Pairs(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8),
                  pd.DataFrame({"anatomy": ["chest"] * 2, "patient": ["p"] * 2, "slice": [0, 1], "dose": [0.1] * 2}))
    config = RunConfig(methods=("ldct",), out=tmp_path / "r")
    with pytest.raises(RuntimeError, match="produced NaN/inf on chest at 10%; its checkpoint may be broken"):
        denoise_all(Broken(None), pairs, config)

    @friendly
    def fails():
        denoise_all(Broken(None), pairs, config)

    with pytest.raises(click.ClickException, match="its checkpoint may be broken"):
        fails()


def _store(root, method, value, anatomy="chest"):
    st = RunStore(root)
    rows = [dict(run=st.name, method=method, anatomy=anatomy, dose=d, seen_dose=d == 0.1, seen_anatomy=True,
                 seen_data=True, acquisition="default", seen_acquisition=True, patient=p, slice=0,
                 reference="full_dose", window="founddiff", metric="psnr",
                 value=value + (p == "p1")) for d in (0.1, 0.25) for p in ("p1", "p2")]
    for d, cell in pd.DataFrame(rows)[COLUMNS].groupby("dose"):
        st.write_cell(method, anatomy, d, cell)
    st.write_manifest({"config": {}})
    st.consolidate()
    return st


def test_runs_with_one_folder_name_keep_apart_and_table_text_is_escaped(tmp_path):
    from ldct_bench.report import make_report

    a = _store(tmp_path / "A" / "run1", "x|<script>&_%", 40.0)
    b = _store(tmp_path / "B" / "run1", "x|<script>&_%", 42.0)
    make_report([a.root, b.root], tmp_path / "rep", formats=("md", "latex"), metrics=("psnr",), draw=False)
    md = (tmp_path / "rep" / "leaderboard.md").read_text()
    assert "<script>" not in md and "x\\|&lt;script&gt;&_% [A/run1]" in md and "[B/run1]" in md
    assert "40.50" in md and "42.50" in md  # each run's own mean, not the two pooled (41.50)
    tex = (tmp_path / "rep" / "leaderboard.tex").read_text()
    assert r"\&\_\%" in tex and "&_%" not in tex.replace(r"\&\_\%", "")


def test_a_report_over_runs_of_different_cells_writes_every_format(tmp_path):
    from ldct_bench.report import make_report

    a = _store(tmp_path / "embedded", "redcnn", 40.0)
    b = _store(tmp_path / "dicom", "redcnn", 42.0, anatomy="abdomen")
    make_report([a.root, b.root], tmp_path / "rep", metrics=("psnr",))
    csv = pd.read_csv(tmp_path / "rep" / "leaderboard.csv")
    assert sorted(zip(csv.method, csv.anatomy)) == [("redcnn [dicom]", "abdomen")] * 2 + [("redcnn [embedded]", "chest")] * 2
