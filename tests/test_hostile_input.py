"""Reliability, round three (#28): what comes from outside (DICOM headers, checkpoint headers, resume states, jobs
files, results stores, flags) never picks a path, never builds an unbounded network and never ends in a traceback.
Each test is named by the defect it holds (d1 ... d22); the property tests (hypothesis) cover each class."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from ldct_bench.checkpoints import REFERENCE_DIR, TrainJob
from ldct_bench.cli import main
from ldct_bench.conventions import is_plain_name, safe
from ldct_bench.methods import MAX_PARAMETERS, get_method, registry
from ldct_bench.protocol import parse_dose
from ldct_bench.results import COLUMNS, RunStore, check_schema

from .helpers import TINY
from .test_dicom import write_ct


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_sentence(res, *words):
    """A refused command: non-zero exit, no traceback, and each of `words` in what it said."""
    assert res.exit_code != 0, res.output
    assert "Traceback" not in res.output and not isinstance(res.exception, (AttributeError, TypeError, IndexError))
    for w in words:
        assert w in res.output, res.output


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def body(size=32):
    yy, xx = np.mgrid[:size, :size]
    return np.where((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.4 * size) ** 2, 40.0, -1000.0)


# ------------------------------------------------------------------------------------------------ security
def test_d1_header_values_never_become_paths_and_data_info_lists_past_a_broken_dataset(tmp_path):
    src, cache = tmp_path / "src", tmp_path / "deep" / "er" / "cache"
    outside = tmp_path / "abs_escape"
    ids = ["../../../escaped", str(outside), "a/b", "a%2Fb", "..", ".hidden"]
    for i, pid in enumerate(ids):
        write_ct(src / f"s{i}" / "0.dcm", body(), pid, z=0, BodyPartExamined="CHEST")
    before = files_under(tmp_path)
    res = invoke("data", "import", "--source", "dicom", "--root", src, "--name", "hostile", "--doses", "25",
                 "--cache-dir", cache)
    assert res.exit_code == 0, res.output
    new = files_under(tmp_path) - before
    assert new and all(p.resolve().is_relative_to((cache / "hostile").resolve()) for p in new)
    assert not outside.exists() and not (tmp_path / "deep" / "escaped").exists()
    folders = sorted(p.name for p in (cache / "hostile" / "chest").iterdir())
    assert len(folders) == len(ids)  # distinct IDs, distinct folders: 'a/b' and 'a%2Fb' do not collide
    assert all(f not in (".", "..") and not f.startswith(".") and "/" not in f for f in folders)
    # a broken dataset beside it: named, and the rest still listed
    (cache / "broken").mkdir()
    (cache / "broken" / "manifest.json").write_text(json.dumps({"kind": "dicom", "splits": {"chest": {}},
                                                                "files": {"chest/a/b/full.npy": "0"}}))
    info = invoke("data", "info", "--cache-dir", cache)
    one_sentence(info, "broken", "1 of 2 cached datasets cannot be read")
    assert "hostile" in info.output and "doses=[25%]" in info.output


@given(st.text(max_size=300), st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_property_a_header_value_is_one_safe_path_component_and_distinct_values_stay_distinct(a, b):
    for name in (a, b):
        part = safe(name)
        assert part and part not in (".", "..") and not part.startswith(".")
        assert "/" not in part and "\\" not in part and "\x00" not in part
        assert len(part.encode()) <= 255 and Path(part).name == part and is_plain_name(part)
    if a != b:
        assert safe(a) != safe(b)


def _committed(name: str, folder: Path) -> Path:
    shutil.copytree(next((REFERENCE_DIR / name).iterdir()), folder)
    return folder / "weights.safetensors"


def _with_config(path: Path, **changes) -> Path:
    """The checkpoint at `path` with its header's config changed (and no manifest to vouch for it)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    meta["config"] = json.dumps({**json.loads(meta["config"]), **changes})
    out = path.parent.parent / "received" / "forged.safetensors"  # handed on alone: no manifest vouches for it
    out.parent.mkdir()
    save_file(load_file(str(path)), str(out), metadata=meta)
    return out


@pytest.mark.parametrize("filters, says", [
    ("abc", "filters takes an integer in [1, 1024], not 'abc'"),
    (-3, "filters takes an integer in [1, 1024], not -3"),
    (1_000_000, "filters takes an integer in [1, 1024], not 1000000"),
    (2.5, "filters takes an integer"),
    (None, "filters takes an integer"),
])
def test_d2_a_checkpoint_header_config_is_checked_like_set_before_any_network_is_built(filters, says, tmp_path):
    forged = _with_config(_committed("redcnn", tmp_path / "ck"), filters=filters)
    with pytest.raises(ValueError, match="forged.safetensors's config: " + says.replace("[", r"\[").replace("]", r"\]")):
        get_method("redcnn").load(forged)


def test_d2_the_parameter_count_a_config_asks_for_is_bounded_on_the_meta_device():
    cls = get_method("founddiff")
    assert cls.check_size(cls.configure("paper"), "paper") < MAX_PARAMETERS  # every profile fits
    with pytest.raises(ValueError, match=r"asks for 1,448,511,289 parameters, over the 500,000,000"):
        cls.configure("quick", {"dim": 512}, "checkpoint x's config")  # each field in range; together too large
    res = invoke("run", "--methods", "founddiff", "--set", "founddiff.dim=512", "--out", "never")
    one_sentence(res, "--set founddiff.*", "parameters, over the")
    assert not Path("never").exists()


@given(st.dictionaries(st.sampled_from(["filters", "iterations", "lr", "batch_size", "patch_size", "zero_readout",
                                        "plateau_db", "lr_final", "nonsense"]),
                       st.one_of(st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
                                 st.text(max_size=8), st.booleans(), st.none(), st.lists(st.integers(), max_size=3)),
                       max_size=5))
@settings(max_examples=200, deadline=None)
def test_property_a_config_from_any_header_values_is_valid_or_one_sentence(values):
    cls = get_method("redcnn")
    try:
        config = cls.Config.checked(values, "header")
    except ValueError as exc:
        assert str(exc).startswith("header: ") and "\n" not in str(exc)
        return
    assert config.problems() == []


def test_d3_a_damaged_or_forged_resume_state_is_one_sentence_that_says_how_to_start_over(tiny_dataset, tmp_path):
    from ldct_bench.training import STATE_RECORD, train_method

    job = TrainJob("redcnn", "quick", (0.1,), ("chest",), tiny_dataset.root.name, overrides=TINY["redcnn"])
    out = tmp_path / "ck"
    train_method(job, tiny_dataset, out=out, progress=False)
    state = (out / "state.pt").read_bytes()
    record = json.loads((out / STATE_RECORD).read_text())
    (out / STATE_RECORD).write_text(json.dumps({"sha256": ["0" * 64, *record["sha256"]]}))
    train_method(job, tiny_dataset, out=out, progress=False)  # killed between the two renames: the old state is vouched

    trap = tmp_path / "executed"

    class Trap:
        def __reduce__(self):
            return (open, (str(trap), "w"))

    for forged in (os.urandom(4096), pickle.dumps({"identity": Trap()})):
        (out / "state.pt").write_bytes(forged)
        with pytest.raises(ValueError, match=r"state.pt does not match the sha256 recorded beside it .*--retrain\) to "
                                             "start that training over"):
            train_method(job, tiny_dataset, out=out, progress=False)
    (out / "state.pt").write_bytes(state)
    (out / STATE_RECORD).unlink()
    with pytest.raises(ValueError, match="has no readable record of its sha256"):
        train_method(job, tiny_dataset, out=out, progress=False)
    assert not trap.exists()
    assert train_method(job, tiny_dataset, out=out, retrain=True, progress=False)["complete"]  # starting over works


def test_d4_a_checkpoint_without_a_manifest_is_said_and_its_sha256_recorded(tmp_path):
    from ldct_bench.data.dataset import sha256_file

    weights = _committed("redcnn", tmp_path / "ck")
    (weights.parent / "manifest.json").unlink()
    for i in range(2):
        write_ct(tmp_path / "D" / f"{i}.dcm", body(64), "P1", "1.2.7", z=i)
    res = invoke("denoise", "--method", "redcnn", "--checkpoint", weights, "--in", tmp_path / "D", "--out", tmp_path / "O")
    assert res.exit_code == 0, res.output
    digest = sha256_file(weights)
    assert "has no manifest.json beside it that names it" in res.output and digest in res.output
    record = json.loads(next((tmp_path / "O").rglob(".ldct-bench-series.json")).read_text())
    assert record["sha256"] == digest and record["slices"] == 2
    assert digest in pydicom.dcmread(next((tmp_path / "O").rglob("*.dcm"))).DerivationDescription


def _status(out: Path):
    return invoke("run", "--status", "--out", out, "--methods", "ldct", "--doses", "10", "--train-doses", "10",
                  "--anatomies", "chest")


def test_d5_a_job_id_from_jobs_json_never_becomes_a_path(tmp_path):
    out = tmp_path / "received"
    out.mkdir()
    (out / "jobs.json").write_text(json.dumps({"ldct/chest": {"job_id": "../../../../etc/hostname",
                                                              "executor": "local"}}))
    one_sentence(_status(out), "jobs.json", "'../../../../etc/hostname', which is not a submitit job id")
    (out / "jobs.json").write_text(json.dumps({"ldct/chest": {"job_id": "999999999", "executor": "local"}}))
    res = _status(out)  # what submitit writes is read as before: the job is gone
    assert res.exit_code == 0 and " killed " in res.output, res.output


@pytest.mark.parametrize("text, says", [
    ("[1, 2]", "a list, not an object of units"),
    ('{"ldct/head": "str"}', "unit 'ldct/head' is not a job record"),
    ("{not json", "not JSON"),
    ('{"ldct/chest": {"executor": "local"}}', "unit 'ldct/chest' is not a job record"),
])
def test_d6_a_jobs_file_that_is_not_ours_is_one_sentence_naming_it(text, says, tmp_path):
    out = tmp_path / "received"
    out.mkdir()
    (out / "jobs.json").write_text(text)
    one_sentence(_status(out), str(out / "jobs.json"), says, "delete it to resubmit")


# ----------------------------------------------------------------------------------- files people hand on
def _store(tmp_path: Path, **columns) -> Path:
    st_ = RunStore(tmp_path / "run")
    rows = [dict(run="run", method=m, anatomy="chest", dose=d, seen_dose=d == 0.1, seen_anatomy=True, seen_data=True,
                 acquisition="default", seen_acquisition=True, patient=p, slice=0, reference="full_dose",
                 window="founddiff", metric="psnr", value=40.0 + i)
            for m in ("ldct", "x") for d in (0.1, 0.25) for i, p in enumerate(("p1", "p2", "p3"))]
    table = pd.DataFrame(rows)[COLUMNS]
    for name, value in columns.items():
        table = table.drop(columns=name) if value is None else table.assign(**{name: value})
    st_.write_manifest({"config": {}})
    table.to_parquet(st_.root / "results.parquet", index=False)
    return st_.root


@pytest.mark.parametrize("columns, says", [
    ({"value": "40.1"}, "value holds text, not numbers"),
    ({"dose": "10%"}, "dose holds text, not numbers"),
    ({"value": None}, "lacks the column(s) value of a results table"),
    ({"seen_dose": "yes"}, "seen_dose holds text, not true/false"),
])
def test_d7_a_store_of_the_wrong_schema_is_one_sentence_on_opening(columns, says, tmp_path):
    one_sentence(invoke("report", _store(tmp_path, **columns), "--metrics", "psnr", "--format", "md"), says)


def test_d7_nan_scores_show_as_a_dash(tmp_path):
    root = _store(tmp_path, value=np.nan)
    res = invoke("report", root, "--metrics", "psnr", "--format", "md,html")
    assert res.exit_code == 0, res.output
    board = (root / "report" / "leaderboard.md").read_text()
    assert "| ldct | – | – | – |" in board and "nan" not in board.lower()


@given(st.sets(st.sampled_from(COLUMNS), max_size=3), st.sampled_from(COLUMNS),
       st.sampled_from(["text", 1.5, True, 3]))
@settings(max_examples=100, deadline=None)
def test_property_a_store_passes_the_schema_check_exactly_when_its_columns_and_types_are_ours(drop, column, value):
    rows = [dict(run="r", method="m", anatomy="chest", dose=0.1, seen_dose=True, seen_anatomy=True, seen_data=True,
                 acquisition="default", seen_acquisition=True, patient="p", slice=0, reference="full_dose",
                 window="full", metric="psnr", value=1.0)]
    table = pd.DataFrame(rows).assign(**{column: value}).drop(columns=list(drop))
    required = set(COLUMNS) - {"reference", "seen_dose", "seen_anatomy", "seen_data", "acquisition",
                               "seen_acquisition"}
    bad_type = column in table and (
        (column in ("dose", "slice", "value") and (not isinstance(value, (int, float)) or value is True))
        or (column.startswith("seen_") and value is not True))
    try:
        check_schema(table, "store")
        ok = True
    except ValueError as exc:
        ok = False
        assert str(exc).startswith("store ") and "\n" not in str(exc)
    assert ok == (not (drop & required) and not bad_type)


def test_d8_slices_whose_size_headers_disagree_with_their_pixels_are_skipped_and_counted(tmp_path):
    from ldct_bench.data.dicom_import import import_dataset

    src = tmp_path / "src"
    for i in range(2):
        write_ct(src / "good" / f"{i}.dcm", body(), "G", "1.2.1", z=i, BodyPartExamined="CHEST")
    write_ct(src / "small" / "0.dcm", body(), "S", "1.2.2", z=0, BodyPartExamined="CHEST")
    ds = pydicom.dcmread(src / "small" / "0.dcm")
    ds.Rows = ds.Columns = 16  # four times fewer pixels than the data hold
    ds.save_as(src / "small" / "0.dcm")
    write_ct(src / "nocols" / "0.dcm", body(), "N", "1.2.3", z=0, BodyPartExamined="CHEST")
    ds = pydicom.dcmread(src / "nocols" / "0.dcm")
    del ds.Columns
    ds.save_as(src / "nocols" / "0.dcm")
    out = import_dataset(src, source="dicom", name="sizes", cache_dir=tmp_path / "c", extra_doses=(0.25,))
    reason = "slices whose image size headers do not fit their pixel data"
    assert out.manifest["skipped"][reason] == 2
    assert out.volume("chest", "G", "full").shape == (2, 32, 32) and out.volume("chest", "G", "d0.2500").ndim == 3


@pytest.mark.parametrize("slope, intercept", [(0, -1024), ("NaN", -1024), (1, "inf")])
def test_d9_a_zero_or_non_finite_rescale_is_a_skipped_slice_in_import_and_denoise(slope, intercept, tmp_path):
    from ldct_bench.data.dicom_import import import_dataset

    src = tmp_path / "src"
    for i in range(2):
        write_ct(src / f"{i}.dcm", body(64), "P", "1.2.5", z=i, BodyPartExamined="CHEST")
    ds = pydicom.dcmread(src / "1.dcm")
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.save_as(src / "1.dcm")
    out = import_dataset(src, source="dicom", name="rescale", cache_dir=tmp_path / "c")
    assert out.manifest["skipped"]["slices whose rescale to HU is zero or not a finite number"] == 1
    assert out.volume("chest", "P", "full").shape[0] == 1 and np.isfinite(out.volume("chest", "P", "full")).all()
    res = invoke("denoise", "--method", "redcnn", "--in", src, "--out", tmp_path / "O")
    assert res.exit_code == 0 and "1 slices whose rescale to HU is zero" in res.output, res.output
    written = [pydicom.dcmread(p) for p in (tmp_path / "O").rglob("*.dcm")]
    assert len(written) == 1 and 0 < written[0].pixel_array.mean() < 65535


def test_d10_d11_denoise_names_a_series_of_two_sizes_and_a_file_given_for_a_folder(tmp_path):
    write_ct(tmp_path / "D" / "a.dcm", body(32), "P", "1.2.8", z=0)
    write_ct(tmp_path / "D" / "b.dcm", body(64), "P", "1.2.8", z=1)
    one_sentence(invoke("denoise", "--method", "redcnn", "--in", tmp_path / "D", "--out", tmp_path / "O"),
                 "series 1.2.8 of patient P mixes slice sizes [(32, 32), (64, 64)]")
    one_sentence(invoke("denoise", "--method", "redcnn", "--in", tmp_path / "D" / "a.dcm", "--out", tmp_path / "O"),
                 "a.dcm is a file; give the folder that holds the DICOM series")


# ------------------------------------------------------------------------------------------- flags and --set
@pytest.mark.parametrize("setting, says", [
    ("redcnn.iterations=-5", "iterations takes an integer in [1, 1e+08], not '-5'"),
    ("redcnn.iterations=0", "iterations takes an integer in [1, 1e+08]"),
    ("redcnn.iterations=1e20", "iterations takes an integer in [1, 1e+08]"),
    ("redcnn.lr=nan", "lr takes a number in (0, 1], not 'nan'"),
    ("redcnn.batch_size=0", "batch_size takes an integer in [1, 4096]"),
    ("redcnn.filters=0", "filters takes an integer in [1, 1024]"),
    ("corediff.timesteps=-1", "timesteps takes an integer in [1, 1000]"),
    ("wgan-mse.content=l1", "content takes one of vgg, mse, not 'l1'"),
])
def test_d12_set_checks_ranges_as_the_flags_do_before_anything_is_written(setting, says, tmp_path):
    method = setting.split(".")[0]
    run = invoke("run", "--methods", method, "--set", setting, "--out", tmp_path / "out", "--cache-dir", tmp_path / "c")
    one_sentence(run, f"--set {setting}: {says}")
    train = invoke("train", "--method", method, "--set", setting, "--cache-dir", tmp_path / "c")
    one_sentence(train, says)
    assert not (tmp_path / "out").exists() and not (tmp_path / "c").exists()


def test_d12_every_numeric_config_field_of_every_method_declares_its_range():
    import dataclasses

    for name, cls in registry().items():
        ranges = cls.Config.ranges()
        for f in dataclasses.fields(cls.Config):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if type(default) in (int, float, tuple):
                assert f.name in ranges, f"{name}.{f.name} has no declared range"
        for profile in ("quick", "paper"):
            assert cls.Config.profile(profile).problems() == [], (name, profile)


@pytest.mark.parametrize("text, dose", [
    ("25", 0.25), ("25%", 0.25), ("0.5%", 0.005), ("0.25%", 0.0025), ("1/4", 0.25), ("0.25", 0.25), ("1", 0.01),
    ("1%", 0.01), ("50 %", 0.5), ("1/4%", 0.0025), ("99.9%", 0.999),
])
def test_d13_a_dose_with_a_percent_sign_is_always_a_percent(text, dose):
    assert parse_dose(text) == pytest.approx(dose)


@given(st.decimals(min_value="0.0001", max_value="99.99", places=4))
@settings(max_examples=200, deadline=None)
def test_property_the_dose_grammar(value):
    assert parse_dose(f"{value}%") == round(float(value) / 100, 6)
    fraction = float(value) / 100
    if round(fraction, 6) > 0:
        assert parse_dose(repr(fraction)) == round(fraction, 6)  # a decimal at most 1 is a fraction
    if float(value) > 1:
        assert parse_dose(str(value)) == round(float(value) / 100, 6)  # a bare number above 1 is a percent


@given(st.text(max_size=12))
@settings(max_examples=200, deadline=None)
def test_property_any_dose_text_is_a_dose_or_one_sentence(text):
    try:
        dose = parse_dose(text)
    except ValueError as exc:
        assert str(exc).startswith("dose ") and "\n" not in str(exc)
        return
    assert 0 < dose < 1


@pytest.mark.parametrize("size", ["-5", "100000", "8"])
def test_d14_import_size_is_range_checked(size, tmp_path):
    write_ct(tmp_path / "src" / "0.dcm", body(), "P", z=0, BodyPartExamined="CHEST")
    res = invoke("data", "import", "--source", "dicom", "--root", tmp_path / "src", "--size", size,
                 "--cache-dir", tmp_path / "c")
    one_sentence(res, "--size")
    assert not (tmp_path / "c").exists()


def test_d15_a_missing_training_dataset_is_named_by_its_flag(tmp_path):
    res = invoke("run", "--methods", "ldct", "--train-data", "nosuchdata", "--out", tmp_path / "o",
                 "--cache-dir", tmp_path / "c")
    one_sentence(res, "--train-data nosuchdata: no such dataset folder")


def test_d16_a_folder_holding_only_a_manifest_is_taken_over_by_the_corrected_command(tmp_path):
    from .helpers import tiny_config

    out = tmp_path / "out"
    bad = invoke("run", "--methods", "ldct,redcnn", "--set", "redcnn.lr=nan", "--out", out)
    one_sentence(bad, "lr takes a number")
    assert not out.exists()  # nothing written before the inputs are checked
    RunStore(out).write_manifest({"config": {"methods": ["something", "else"]}, "timings": {}})  # a run that died early
    from ldct_bench.config import RunConfig
    from ldct_bench.protocol import Protocol
    from ldct_bench.runner import run_matrix

    config = RunConfig(methods=("ldct",), out=out, protocol=Protocol((0.25,), (0.25,), ("chest",)),
                       phantoms=tiny_config(), cache_dir=tmp_path / "c")
    table = run_matrix(config, progress=False, echo=lambda *a: None)
    assert len(table) and json.loads((out / "manifest.json").read_text())["config"]["methods"] == ["ldct"]
    with pytest.raises(ValueError, match="already holds a run with a different configuration"):  # cells: kept
        run_matrix(RunConfig(methods=("ldct",), out=out, protocol=Protocol((0.1,), (0.1,), ("chest",)),
                             phantoms=tiny_config(), cache_dir=tmp_path / "c"), progress=False, echo=lambda *a: None)


def test_d17_a_damaged_array_of_a_simulated_set_given_by_path_names_the_command_that_repairs_it(tmp_path):
    from ldct_bench.data.dataset import LDCTDataset, sha256_file

    cache = tmp_path / "c"
    made = invoke("data", "simulate", "--anatomies", "chest", "--doses", "25", "--patients", "2", "--slices", "1",
                  "--size", "32", "--cache-dir", cache)
    assert made.exit_code == 0, made.output
    ds = LDCTDataset(next(cache.glob("embedded-*")))
    rel = "chest/p001/d0.2500.npy"
    data = bytearray((ds.root / rel).read_bytes())
    data[200:400] = bytes(200)
    (ds.root / rel).write_bytes(bytes(data))
    res = invoke("run", "--methods", "ldct", "--data", ds.root, "--train-data", ds.root, "--doses", "25",
                 "--train-doses", "25", "--anatomies", "chest", "--out", tmp_path / "o", "--cache-dir", cache)
    command = (f"ldct-bench data simulate --size 32 --slices 1 --patients 2 --seed 0 --anatomies chest --doses 25 "
               f"--cache-dir {cache}")
    one_sentence(res, "does not match the sha256", command)
    repaired = invoke(*command.split()[1:])
    assert repaired.exit_code == 0, repaired.output
    assert sha256_file(ds.root / rel) == ds.manifest["files"][rel]


# ------------------------------------------------------------------------------------- denoise, run twice
def _series(folder: Path, n=2, patient="P1", uid="1.2.3.4"):
    for i in range(n):
        write_ct(folder / f"{i}.dcm", body(64), patient, uid, z=i)


def _denoise(src, out, *extra):
    return invoke("denoise", "--method", "redcnn", "--in", src, "--out", out, *extra)


def test_d18_an_out_inside_in_is_refused_and_our_own_output_is_never_denoised_again(tmp_path):
    _series(tmp_path / "D")
    one_sentence(_denoise(tmp_path / "D", tmp_path / "D" / "out"), "lies inside --in")
    one_sentence(_denoise(tmp_path / "D", tmp_path / "D"), "lies inside --in")
    assert _denoise(tmp_path / "D", tmp_path / "O").exit_code == 0
    shutil.copytree(tmp_path / "O", tmp_path / "D" / "copied")  # someone copies the outputs back in
    res = _denoise(tmp_path / "D", tmp_path / "O2")
    assert res.exit_code == 0 and "1 series written" in res.output and "2 slices ldct-bench itself wrote" in res.output


def test_d19_d20_stale_writes_are_cleaned_and_only_a_completion_record_makes_a_series_done(tmp_path):
    _series(tmp_path / "D", n=3)
    assert _denoise(tmp_path / "D", tmp_path / "O").exit_code == 0
    series = next(p for p in (tmp_path / "O").rglob("*") if p.is_dir() and any(p.glob("*.dcm")))
    stale = series.parent / f".{series.name}.writing-999999999"  # a process killed mid-series
    stale.mkdir()
    (stale / "0000.dcm").write_bytes(b"half")
    shutil.rmtree(series)
    series.mkdir()  # an empty folder named like the finished series
    res = _denoise(tmp_path / "D", tmp_path / "O")
    assert res.exit_code == 0 and "1 series written" in res.output, res.output
    assert len(list(series.glob("*.dcm"))) == 3 and not stale.exists()
    again = _denoise(tmp_path / "D", tmp_path / "O")
    assert "0 series written" in again.output and "1 already there" in again.output


def test_d21_a_series_copied_into_two_folders_is_one_series_without_duplicates(tmp_path):
    _series(tmp_path / "D" / "first", n=3)
    shutil.copytree(tmp_path / "D" / "first", tmp_path / "D" / "second")
    res = _denoise(tmp_path / "D", tmp_path / "O")
    assert res.exit_code == 0 and "1 series written" in res.output, res.output
    assert "3 duplicate slices" in res.output
    written = [pydicom.dcmread(p) for p in (tmp_path / "O").rglob("*.dcm")]
    assert len(written) == 3 and len({float(d.ImagePositionPatient[2]) for d in written}) == 3


def test_d22_a_checkpoint_for_a_method_that_learns_nothing_is_refused(tmp_path):
    _series(tmp_path / "D")
    weights = _committed("redcnn", tmp_path / "ck")
    one_sentence(invoke("denoise", "--method", "ldct", "--checkpoint", weights, "--in", tmp_path / "D", "--out",
                        tmp_path / "O"), "method 'ldct' learns nothing and takes no weights")
    assert not (tmp_path / "O").exists()
