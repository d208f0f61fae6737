"""Acquisition profiles (#29) against physics, and the acquisition axis through data, runs and reports."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ldct_bench.cli import main
from ldct_bench.data.acquisition import ACQUISITIONS, SHARP, SMOOTH, STANDARD, acquisition_of
from ldct_bench.data.dataset import LDCTDataset, PhantomConfig
from ldct_bench.data.projector import ellipse_sinogram, hu_to_mu
from ldct_bench.data.resolve import REFERENCE_TRAINING, phantoms_for, training_spec
from ldct_bench.data.simulate import Simulator
from ldct_bench.metrics.task import nps_2d, radial_nps, ttf_circular_edge

MU_W = hu_to_mu(torch.tensor(0.0)).item()
MU_BONE = hu_to_mu(torch.tensor(1000.0)).item()


def disk(radius_mm: float, contrast_mu: float, water_mm: float = 100.0) -> torch.Tensor:
    """A water cylinder with a centred disk of `contrast_mu` above water (rows for ellipse_sinogram)."""
    return torch.tensor([[0, 0, water_mm, water_mm, 0.0, MU_W], [0, 0, radius_mm, radius_mm, 0.0, contrast_mu]],
                        dtype=torch.float64)


def noiseless(sim: Simulator, rows: torch.Tensor) -> np.ndarray:
    return sim.reconstruct(ellipse_sinogram(sim.geometry, rows)[None].float())[0].numpy()


def test_the_default_profile_is_todays_simulator_and_keeps_every_cache_key():
    from .helpers import tiny_config

    assert ACQUISITIONS["default"].simulator(256).to_dict() == Simulator().to_dict()
    assert phantoms_for("embedded@default", PhantomConfig()) == PhantomConfig()
    assert PhantomConfig().dataset_name == "embedded-9e665be07c6d"  # the clinical phantoms: the default since #30
    assert PhantomConfig(anatomy_model="realistic").dataset_name == "embedded-4f8819536c14"  # its old key, kept
    assert PhantomConfig(anatomy_model="ellipses").dataset_name == "embedded-1041366e77c8"  # the old key, kept
    assert REFERENCE_TRAINING == "embedded@" + ",".join(ACQUISITIONS) and training_spec("embedded") == REFERENCE_TRAINING
    assert training_spec("embedded@sharp") == "embedded@sharp" and training_spec("mayo2016") == "mayo2016"
    assert training_spec("embedded", tiny_config()) == "embedded"  # phantoms through a scanner of their own
    assert {acquisition_of(a.simulator(128).to_dict()) for a in ACQUISITIONS.values()} == set(ACQUISITIONS)
    assert len({phantoms_for(f"embedded@{n}").dataset_name for n in ACQUISITIONS}) == len(ACQUISITIONS)


@pytest.mark.parametrize("name", list(ACQUISITIONS))
def test_each_profile_reconstructs_at_its_declared_pixel_size(name):
    """A 40 mm disk covers pi r^2 / pixel^2 pixels above half its contrast: the FBP grid is the declared one."""
    acq = ACQUISITIONS[name]
    img = noiseless(acq.simulator(), disk(40.0, MU_BONE - MU_W))
    area_mm2 = (img > 500).sum() * acq.pixel_mm**2
    assert area_mm2 == pytest.approx(math.pi * 40.0**2, rel=0.03)
    assert acq.pixel_mm == acq.geometry.fov_mm / acq.geometry.image_size
    assert (0.5 <= acq.pixel_mm <= 0.75) if name.startswith("dfov") else acq.pixel_mm == pytest.approx(350 / 256)


@pytest.mark.parametrize("name", list(ACQUISITIONS))
def test_noise_scales_as_inverse_root_dose_in_every_profile(name):
    sim = replace(ACQUISITIONS[name].simulator(128), noise=replace(ACQUISITIONS[name].noise, electronic_var=0.0))
    p = ellipse_sinogram(sim.geometry, disk(1.0, 0.0))
    clean = sim.reconstruct(p[None].float())[0]
    x, y = sim.geometry.pixel_centres()
    centre = (x**2 + y**2) < 25.0**2

    def std(dose):
        return float(np.mean([(sim.scan(p, s, [dose], [s + 99])[0] - clean)[centre].std() for s in (1, 2)]))

    assert std(0.25) / std(1.0) == pytest.approx(2.0, rel=0.10)


def _kernel(k):
    return replace(ACQUISITIONS["dfov140"], kernel=k).simulator()


def test_sharper_kernels_have_a_higher_ttf50():
    """TG-233's circular-edge TTF of a bone rod, noiseless, at 0.55 mm pixels (the kernel limits, not the grid)."""
    ttf50 = {}
    for k in (SMOOTH, STANDARD, SHARP):
        sim = _kernel(k)
        img = noiseless(sim, disk(10.0, MU_BONE - MU_W))
        c = (sim.geometry.image_size - 1) / 2
        ttf50[k.name] = ttf_circular_edge(img, c, c, 10.0 / sim.geometry.pixel_mm, sim.geometry.pixel_mm).ttf50
    assert ttf50["smooth"] < 0.9 * ttf50["standard"] and ttf50["standard"] < 0.9 * ttf50["sharp"], ttf50


def _nps_mean_frequency(sim: Simulator, n: int = 4) -> float:
    p = ellipse_sinogram(sim.geometry, disk(1.0, 0.0))
    clean = sim.reconstruct(p[None].float())[0]
    imgs = torch.stack([sim.scan(p, 10 + i, [1.0], [0])[0] for i in range(n)]) - clean
    c, h = sim.geometry.image_size // 2, 32
    rois = imgs[:, c - h:c + h, c - h:c + h].numpy()
    return radial_nps(nps_2d(rois, sim.geometry.pixel_mm, np.zeros(rois.shape[1:])), sim.geometry.pixel_mm).f_mean


def _predicted_mean_frequency(sim: Simulator) -> float:
    """FBP theory: NPS(f) ~ |f| W(f)^2 T(f)^2 up to the detector's Nyquist frequency at the isocentre, T the linear
    interpolation of the back-projector (sinc^2 of the channel spacing); its mean frequency."""
    g = sim.geometry
    nyquist = g.source_det_mm / (2 * g.det_pitch_mm * g.source_iso_mm)
    u = np.linspace(1e-5, 1, 100_001)
    window = {"hann": lambda x: 0.5 * (1 + np.cos(np.pi * x)), "shepp-logan": lambda x: np.sinc(x / 2)}[sim.filter_window]
    w = np.where(u <= sim.filter_cutoff, window(np.minimum(u / sim.filter_cutoff, 1)), 0.0)
    nps = u * w**2 * np.sinc(u / 2) ** 4
    return float((u * nps).sum() / nps.sum() * nyquist)


def test_the_nps_moves_with_the_kernel_and_the_pixel_size_as_fbp_theory_says():
    """At 0.55 mm pixels the grid resolves the whole filtered band: each kernel's NPS mean frequency is FBP theory's
    (within 10 %). At the default 1.37 mm the image's Nyquist frequency (0.37 cycles/mm) cuts the sharp kernel's."""
    measured = {k.name: _nps_mean_frequency(_kernel(k)) for k in (SMOOTH, STANDARD, SHARP)}
    for k in (SMOOTH, STANDARD, SHARP):
        assert measured[k.name] == pytest.approx(_predicted_mean_frequency(_kernel(k)), rel=0.10), measured
    assert measured["smooth"] < measured["standard"] < measured["sharp"]
    coarse = _nps_mean_frequency(ACQUISITIONS["sharp"].simulator())
    assert coarse < 0.7 * measured["sharp"] and coarse < 1 / (2 * ACQUISITIONS["sharp"].pixel_mm)


def test_data_simulate_takes_acquisitions_and_each_is_cached_apart(tmp_path):
    res = CliRunner().invoke(main, ["data", "simulate", "--acquisition", "ge,dfov140", "--anatomies", "chest",
                                    "--patients", "2", "--slices", "1", "--size", "32", "--doses", "25",
                                    "--cache-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    made = {acquisition_of(LDCTDataset(m.parent).manifest["config"]["simulator"]): m.parent.name
            for m in tmp_path.glob("embedded-*/manifest.json")}
    assert set(made) == {"ge", "dfov140"} and "--data embedded@ge" in res.output
    bad = CliRunner().invoke(main, ["data", "simulate", "--acquisition", "default,nope", "--cache-dir", str(tmp_path)])
    assert bad.exit_code != 0 and "unknown acquisition 'nope'" in bad.output and len(made) == 2
    run = CliRunner().invoke(main, ["run", "--data", "embedded@nope", "--out", str(tmp_path / "o")])
    assert run.exit_code != 0 and "--data embedded@nope: unknown acquisition 'nope'" in run.output


def test_a_run_on_another_acquisition_marks_its_rows_unseen_and_the_report_has_the_axis(tmp_path):
    from ldct_bench.config import RunConfig
    from ldct_bench.protocol import Protocol
    from ldct_bench.report.generalization import generalization
    from ldct_bench.runner import run_matrix

    from .helpers import tiny_config

    phantoms = tiny_config(image_size=64, slices_per_patient=2, train_patients=1, val_patients=0, test_patients=1)
    tables = {}
    for data in ("embedded@default", "embedded@dfov180"):  # as `run --acquisitions default,dfov180` lays them out
        config = RunConfig(methods=("ldct",), out=tmp_path / "runs" / data.partition("@")[2],
                           protocol=Protocol((0.25,), (0.25,), ("chest",)),
                           data=data, train_data="embedded@default", phantoms=phantoms, cache_dir=tmp_path / "c")
        tables[data] = run_matrix(config, progress=False, echo=lambda *a: None)
    default, other = tables["embedded@default"], tables["embedded@dfov180"]
    assert set(default.acquisition) == {"default"} and default.seen_acquisition.all() and default.seen_data.all()
    assert set(other.acquisition) == {"dfov180"} and not other.seen_acquisition.any() and other.seen_data.all()
    assert set(other.patient) == set(default.patient)  # the same (test) patients, scanned otherwise
    both = pd_concat([default.assign(run="a"), other.assign(run="b")])
    columns = {c[0] for c in generalization(both.assign(method="ldct")).table.columns}
    assert {"acquisition regret, seen", "acquisition regret, unseen"} <= columns
    manifest = json.loads((tmp_path / "runs" / "dfov180" / "manifest.json").read_text())
    assert manifest["dataset"]["pixel_mm"] == pytest.approx(180 / 64)
    report = CliRunner().invoke(main, ["report", str(tmp_path / "runs"), "--format", "md"])  # the folder of runs
    assert report.exit_code == 0, report.output
    made = (tmp_path / "runs" / "report" / "generalization.md").read_text()
    record = (tmp_path / "runs" / "report" / "report_manifest.json").read_text()
    assert "acquisition regret, unseen" in made and "runs/default" in record
    (tmp_path / "empty").mkdir()
    empty = CliRunner().invoke(main, ["report", str(tmp_path / "empty")])
    assert empty.exit_code != 0 and "is not a run folder (no manifest.json) and holds none" in empty.output


def test_run_acquisitions_makes_one_run_per_profile_all_trained_once(tmp_path):
    from ldct_bench.cli import _run_configs

    base = {"methods_spec": "ldct,redcnn", "doses": None, "train_doses": None, "preset": "default", "anatomies": None,
            "train_anatomies": None, "train_acquisitions": None, "train_data": None, "data_spec": "embedded",
            "profile": "quick", "device": "cpu", "seed": 0, "out": tmp_path / "x", "retrain": False, "oracle": False,
            "metrics_spec": None, "save_images": False, "resample": False, "iq": False, "iq_realisations": 100,
            "rescore_spec": None,
            "executor": None, "gpus_per_job": 0, "sets": (), "cache_dir": tmp_path / "c", "anatomy_model": "ellipses"}
    configs = _run_configs({**base, "acquisitions": "default,dfov140"})
    assert [(c.out.name, c.data, c.trained_on) for c in configs] == [
        ("default", "embedded@default", REFERENCE_TRAINING), ("dfov140", "embedded@dfov140", REFERENCE_TRAINING)]
    loao = _run_configs({**base, "acquisitions": "all", "train_acquisitions": "default,ge,smooth,sharp,dfov180"})
    assert [c.out.name for c in loao] == list(ACQUISITIONS)
    assert {c.trained_on for c in loao} == {"embedded@default,ge,smooth,sharp,dfov180"}
    shown = CliRunner().invoke(main, ["run", "--status", "--acquisitions", "ge,sharp", "--methods", "ldct",
                                      "--out", str(tmp_path / "x"), "--cache-dir", str(tmp_path / "c")])
    assert shown.exit_code == 0 and shown.output.count("pending   0/4") == 2 * 3 and "sharp:" in shown.output
    for args, said in ((["--acquisitions", "default,nope"], "unknown acquisition 'nope'"),
                       (["--acquisitions", "ge", "--data", "mayo2016"], "cannot evaluate --data mayo2016")):
        bad = CliRunner().invoke(main, ["run", *args, "--out", str(tmp_path / "y")])
        assert bad.exit_code != 0 and said in bad.output and not (tmp_path / "y").exists()


def pd_concat(frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def test_a_checkpoint_knows_its_training_domain_and_denoise_names_a_series_outside_it(trained_cache, tmp_path):
    from ldct_bench.checkpoints import REFERENCE_DIR, outside_domain, training_domain

    from .test_dicom import write_ct

    trained = next(trained_cache.glob("checkpoints/redcnn/*/manifest.json"))
    domain = json.loads(trained.read_text())["domain"]  # recorded by the harness: the tiny scanner's 2.73 mm
    assert domain["pixel_mm"] == [pytest.approx(350 / 128)] * 2 and domain["acquisitions"] == ["custom"]
    committed = training_domain(next((REFERENCE_DIR / "redcnn").glob("*/weights.safetensors")))
    assert committed["pixel_mm"] == [pytest.approx(140 / 256), pytest.approx(350 / 256)]  # every profile, #30
    assert sorted(committed["acquisitions"]) == sorted(ACQUISITIONS)
    assert sorted(committed["kernels"]) == ["sharp", "smooth", "standard"]
    assert outside_domain(committed, 0.8) == "" and "0.30 mm pixels, outside the 0.55" in outside_domain(committed, 0.3)
    yy, xx = np.mgrid[:64, :64]
    body = np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 26**2, 40.0, -1000.0)
    for i in range(2):
        write_ct(tmp_path / "D" / f"{i}.dcm", body, "P", "1.2.4", z=i, spacing=0.30)
    said = CliRunner().invoke(main, ["denoise", "--method", "redcnn", "--in", str(tmp_path / "D"), "--out",
                                     str(tmp_path / "O")])
    assert said.exit_code == 0 and "0.30 mm pixels, outside the 0.55" in said.output, said.output
    again = CliRunner().invoke(main, ["denoise", "--method", "redcnn", "--in", str(tmp_path / "D"), "--out",
                                      str(tmp_path / "R"), "--resample"])
    assert again.exit_code == 0 and "run at 0.55 mm and resampled back" in again.output, again.output
    record = json.loads(next((tmp_path / "R").rglob(".ldct-bench-series.json")).read_text())
    assert record["resampled_to_mm"] == pytest.approx(140 / 256)  # the nearest pixel size it trained at


def test_resampling_runs_the_method_at_the_ratio_and_returns_the_input_size():
    from ldct_bench.evaluate import denoise_resampled

    class Shape:
        name, context = "shape", 0
        seen = []

        def denoise(self, x):
            self.seen.append(tuple(x.shape[-2:]))
            return x[:, :1]

    x = torch.randn(2, 1, 100, 100)
    out = denoise_resampled(Shape(), x, "here", 8, 0, "cpu", 0.35)
    assert Shape.seen == [(35, 35)] and out.shape == x.shape
    assert torch.equal(denoise_resampled(Shape(), x, "here", 8, 0, "cpu", 1.0), x)  # ratio 1: untouched


def test_the_report_draws_the_gain_against_pixel_size_from_the_runs_manifests(tmp_path):
    import pandas as pd

    from ldct_bench.report import make_report, with_pixel_mm
    from ldct_bench.results import COLUMNS, RunStore

    stores = []
    for run, pixel, gain in (("coarse", 1.37, 3.0), ("fine", 0.55, 0.5)):
        st = RunStore(tmp_path / run)
        rows = [dict(run=run, method=m, anatomy="chest", dose=0.1, seen_dose=True, seen_anatomy=True, seen_data=True,
                     acquisition=run, seen_acquisition=run == "coarse", patient=p, slice=0, reference="full_dose",
                     window="founddiff", metric="psnr", value=30.0 + (gain if m == "x" else 0.0) + i)
                for m in ("ldct", "x") for i, p in enumerate(("p1", "p2"))]
        for m, cell in pd.DataFrame(rows)[COLUMNS].groupby("method"):
            st.write_cell(m, "chest", 0.1, cell)
        st.write_manifest({"config": {}, "dataset": {"pixel_mm": pixel}})
        st.consolidate()
        stores.append(st.root)
    written = make_report(stores, tmp_path / "rep", formats=("md",), metrics=("psnr",))
    assert tmp_path / "rep" / "figures" / "gain_vs_pixel.png" in written
    runs = pd.concat([RunStore(r).table().assign(run=r.name) for r in stores])
    sized = with_pixel_mm(runs, {r.name: RunStore(r).read_manifest() for r in stores})
    assert sorted(sized.pixel_mm.unique()) == [0.55, 1.37]


def test_training_on_several_acquisitions_reads_them_as_one_and_its_domain_spans_them(tmp_path):
    from ldct_bench.checkpoints import TrainJob
    from ldct_bench.config import RunConfig
    from ldct_bench.data.dataset import DatasetUnion
    from ldct_bench.data.resolve import dataset_name, open_dataset
    from ldct_bench.plan import resolve
    from ldct_bench.protocol import Protocol
    from ldct_bench.training import train_method

    from .helpers import TINY, tiny_config

    phantoms = tiny_config(image_size=64, slices_per_patient=2, train_patients=1, val_patients=1, test_patients=1)
    spec = "embedded@default,dfov140"
    union = open_dataset(spec, (0.25,), ("chest",), ("train", "val"), cache_dir=tmp_path / "c", phantoms=phantoms)
    assert isinstance(union, DatasetUnion) and len(union.pairs(("chest",), (0.25,), "train")) == 2 * 2
    assert union.root.name == dataset_name(spec, tmp_path / "c", phantoms)
    job = TrainJob("redcnn", "quick", (0.25,), ("chest",), union.root.name, overrides=TINY["redcnn"])
    manifest = train_method(job, union, out=tmp_path / "ck", progress=False)
    assert manifest["domain"]["acquisitions"] == ["default", "dfov140"]
    assert manifest["domain"]["pixel_mm"] == [pytest.approx(140 / 64), pytest.approx(350 / 64)]
    config = RunConfig(methods=("ldct",), out=tmp_path / "o", protocol=Protocol((0.25,), (0.25,), ("chest",)),
                       data="embedded@dfov180", train_data=spec, phantoms=phantoms, cache_dir=tmp_path / "c")
    assert resolve(config).data_flags() == {"seen_data": True, "acquisition": "dfov180", "seen_acquisition": False}
    seen = RunConfig(methods=("ldct",), out=tmp_path / "o", protocol=Protocol((0.25,), (0.25,), ("chest",)),
                     data="embedded@dfov140", train_data=spec, phantoms=phantoms, cache_dir=tmp_path / "c")
    assert resolve(seen).data_flags()["seen_acquisition"]
    res = CliRunner().invoke(main, ["run", "--data", "embedded@default,sharp", "--out", str(tmp_path / "x")])
    assert res.exit_code != 0 and "names 2 acquisitions" in res.output


def test_a_kernel_is_compared_only_with_kernels_read_from_headers():
    from ldct_bench.checkpoints import outside_domain

    imported = {"pixel_mm": [0.6, 0.8], "acquisitions": ["SIEMENS B30f"], "kernels": ["B30f"]}
    assert outside_domain(imported, 0.7, "B30f") == ""
    assert outside_domain(imported, 0.7, "B70f") == "kernel B70f, which none of its training images had (B30f)"
    assert outside_domain(imported, 0.3, "B70f").count(";") == 1  # both reasons, in one line
    simulated = {"pixel_mm": [1.37, 1.37], "acquisitions": ["default"], "kernels": ["standard"]}
    assert outside_domain(simulated, 1.37, "B70f") == ""  # the simulator's kernels have no vendor names
