"""Shared fixtures: a private cache for every test, a tiny phantom dataset, a tiny trained RED-CNN."""

from __future__ import annotations

import os

import numba
import pytest
import torch

from ldct_bench.checkpoints import TrainJob
from ldct_bench.data.dataset import LDCTDataset, PhantomConfig
from ldct_bench.environment import keep_freed_memory
from ldct_bench.training import train_method

from .helpers import TINY, TINY_DOSES, tiny_config

TRAINED_ANATOMIES = ("chest",)


def pytest_configure(config):
    keep_freed_memory()  # the allocator setting every `ldct-bench` command runs with (environment.py)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:  # pytest-xdist's workers share the cores, each its part (torch, numba, the CLIs it starts):
        # two workers with two threads each took 408 s, with one each 243 s (the thread pools contend)
        threads = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(threads)
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        os.environ["OMP_NUM_THREADS"] = str(threads)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="run slow tests")


# the files that take longest (seconds of one worker, python -m pytest --junitxml on 2 cores), started first so that
# the two workers, which take a file at a time, end together instead of one finishing a long file alone
LONGEST_FIRST = ("test_runner.py", "test_task_quality.py", "test_notebooks.py", "test_real_transfer.py",  # 73-57 s
                 "test_report.py", "test_methods.py", "test_realism.py", "test_acquisition.py", "test_dicom.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its own order
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
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.getbasetemp() / "torch"))  # no user-cached VGG19 either


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> LDCTDataset:
    return LDCTDataset.embedded(tiny_config(), doses=TINY_DOSES, cache_dir=tmp_path_factory.mktemp("tiny"),
                                progress=False)


@pytest.fixture(scope="session")
def reference_sample(tmp_path_factory) -> LDCTDataset:
    """A fresh test patient per anatomy through the default scanner (256 x 256) at the default doses, 2 adjacent
    slices (the contextual methods read their neighbour), where the committed reference checkpoints are checked."""
    config = PhantomConfig(slices_per_patient=2, train_patients=1, val_patients=0, test_patients=1, seed=11)
    return LDCTDataset.embedded(config, doses=TINY_DOSES, splits=("test",), cache_dir=tmp_path_factory.mktemp("ref"),
                                progress=False)


@pytest.fixture(scope="session")
def trained_cache(tiny_dataset, tmp_path_factory):
    """A cache holding a tiny RED-CNN trained on chest 10 % of the tiny dataset, where `run` looks for it."""
    cache = tmp_path_factory.mktemp("ckcache")
    job = TrainJob("redcnn", "quick", (0.1,), TRAINED_ANATOMIES, tiny_dataset.root.name, overrides=TINY["redcnn"])
    train_method(job, tiny_dataset, cache_dir=cache, progress=False)
    return cache
