"""Shared fixtures: a tiny phantom dataset (128 x 128, coarser scanner) in a private cache."""

from __future__ import annotations

import pytest
import torch

from ldct_bench.data.dataset import LDCTDataset, PhantomConfig
from ldct_bench.data.geometry import FanBeamGeometry
from ldct_bench.data.simulate import Simulator

TINY_GEOMETRY = FanBeamGeometry(image_size=128, n_views=360, n_channels=368, det_pitch_mm=1.2858 * 2)
TINY_DOSES = (0.05, 0.1, 0.25, 0.5)


def tiny_config(**kw) -> PhantomConfig:
    base = dict(image_size=128, slices_per_patient=4, train_patients=3, val_patients=1, test_patients=1,
                simulator=Simulator(TINY_GEOMETRY).to_dict())
    return PhantomConfig(**{**base, **kw})


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="run slow tests")


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow")
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's cache."""
    monkeypatch.setenv("LDCT_BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("LDCT_BENCH_VGG19", raising=False)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> LDCTDataset:
    return LDCTDataset.embedded(tiny_config(), doses=TINY_DOSES, cache_dir=tmp_path_factory.mktemp("tiny"),
                                progress=False)
