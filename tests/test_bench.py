"""`ldct-bench bench`: the training stage, the GPU simulation check (run here on the CPU through the same code), the
profile option and bad stages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from ldct_bench.bench import bench_simulation_on_device, bench_training
from ldct_bench.cli import main
from ldct_bench.data.geometry import FanBeamGeometry
from ldct_bench.data.phantoms import phantom_slice, to_additive


def test_training_stage_times_every_stage_of_each_learned_method():
    rows = bench_training(32, "cpu", ["ldct", "redcnn", "founddiff"], "quick", min_seconds=0.1)
    by_item = {r["item"]: r for r in rows}
    assert set(by_item) == {"redcnn:main 32x32", "founddiff:daclip 32x32", "founddiff:dadiff 32x32"}  # ldct learns nothing
    assert all(r["ours"] > 0 and r["unit"] == "it/s" for r in rows)
    # RED-CNN's quick batch, and its 48 px patch clamped to the 32 px slices
    assert by_item["redcnn:main 32x32"]["note"] == "quick profile, batch 8, patch 32"
    assert by_item["founddiff:daclip 32x32"]["note"].startswith("quick profile, batch 8,")  # DA-CLIP's own batch
    assert by_item["founddiff:dadiff 32x32"]["note"].endswith("selective scan: numba kernels, forward and adjoint")
    # a DA-Diff step (a U-Net with Mamba blocks) costs more than a RED-CNN step
    assert by_item["founddiff:dadiff 32x32"]["ours"] < by_item["redcnn:main 32x32"]["ours"]


def test_simulation_on_a_device_is_checked_against_numba():
    """The rows `bench --device cuda` adds, computed with the torch kernels on the CPU: same images within 0.5 HU."""
    geom = FanBeamGeometry(image_size=64, n_views=144)
    rows = bench_simulation_on_device(geom, to_additive(phantom_slice("abdomen", 1, 0.0)), "cpu", repeats=1, batch=2)
    fbp_row, projection_row = rows
    assert fbp_row["item"] == "FBP 64x64 on cpu, batch 2" and fbp_row["ratio"] > 0
    hu = float(fbp_row["note"].split("max |difference| ")[1].split(" HU")[0])
    assert 0 < hu <= 0.5
    assert float(projection_row["note"].rsplit(" ", 1)[1]) < 1e-5


def test_bench_cli_writes_the_profile_and_refuses_unknown_stages(tmp_path):
    out = tmp_path / "b"
    res = CliRunner().invoke(main, ["bench", "--stages", "inference", "--methods", "ldct", "--size", "256",
                                    "--profile", "paper", "--out", str(out)])
    assert res.exit_code == 0, res.output
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["profile"] == "paper" and saved["device"] == "cpu"
    (row,) = saved["rows"]
    assert row["item"] == "ldct 256x256" and row["note"] == "paper profile, batch 4" and row["ours"] > 0
    res = CliRunner().invoke(main, ["bench", "--stages", "training,warp"])
    assert res.exit_code != 0 and "unknown stage warp" in res.output


def test_simulation_rows_stay_cpu_only_without_a_device(monkeypatch):
    """On the CPU the simulation stage times no device rows (they would compare numba with itself)."""
    import ldct_bench.bench as bench

    monkeypatch.setattr(bench, "bench_simulation_on_device", lambda *a, **k: pytest.fail("called on the CPU"))
    monkeypatch.setattr(bench, "_best_time", lambda fn, repeats: 1.0)
    rows = bench.bench_simulation(64, "cpu", repeats=1)
    assert [r["item"] for r in rows] == ["project+noise+FBP 64x64"]


FAULTS_OF_A_NETWORK = """
import resource, torch
from ldct_bench.environment import keep_freed_memory
net = torch.nn.Sequential(torch.nn.Conv2d(8, 32, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(32, 8, 3, padding=1))
x = torch.randn(8, 8, 256, 256)  # activations of 64 MB, above glibc's largest mmap threshold (32 MB)

def faults():
    with torch.inference_mode():
        net(x)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(10):
            net(x)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = faults()
assert keep_freed_memory()
print(default, faults())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_keeping_freed_memory_removes_the_page_faults_of_a_network():
    """Each forward pass of a small CNN allocates and frees 64 MB activations. By default glibc maps each from the
    kernel and unmaps it again, so every pass faults its pages in afresh (740 000 faults for ten passes here); with
    keep_freed_memory they are reused (none). In a fresh interpreter: the test process already keeps freed memory."""
    out = subprocess.run([sys.executable, "-c", FAULTS_OF_A_NETWORK], capture_output=True, text=True, check=True)
    default, kept = map(int, out.stdout.split())
    assert default > 10 * 16384  # ten passes, each faulting at least one 64 MB activation in
    assert kept < default / 10
