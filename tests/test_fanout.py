"""The matrix through submitit's local executor: same table as in-process; a killed job is resubmitted, no duplicates."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from ldct_bench.cli import main
from ldct_bench.config import RunConfig
from ldct_bench.fanout import ClusterOptions, JobsIncomplete, run_matrix_jobs, unit_states
from ldct_bench.protocol import Protocol
from ldct_bench.results import RunStore
from ldct_bench.runner import run_matrix

from .conftest import TRAINED_ANATOMIES
from .helpers import tiny_overrides

PROTO = Protocol((0.1, 0.25), (0.1,), TRAINED_ANATOMIES)
METHODS = ("ldct", "redcnn")
COLS = ["method", "anatomy", "dose", "seen_dose", "seen_anatomy", "seen_data", "patient", "slice", "reference", "window",
        "metric", "value"]


def _config(tiny_dataset, cache, out, **kw) -> RunConfig:
    return RunConfig(methods=METHODS, out=out, protocol=PROTO, data=str(tiny_dataset.root), cache_dir=cache,
                     overrides=tiny_overrides("redcnn"), **kw)


def _jobs(tiny_dataset, cache, out, **kw):
    return run_matrix_jobs(_config(tiny_dataset, cache, out, **kw), "local", ClusterOptions(time_min=10),
                           progress=False, echo=lambda *a: None)


@pytest.fixture(scope="module")
def in_process(tiny_dataset, trained_cache, tmp_path_factory):
    config = _config(tiny_dataset, trained_cache, tmp_path_factory.mktemp("inproc") / "run")
    return run_matrix(config, progress=False, echo=lambda *a: None)


def test_local_executor_gives_the_in_process_table(tiny_dataset, trained_cache, in_process, tmp_path):
    table = _jobs(tiny_dataset, trained_cache, tmp_path / "run")
    pd.testing.assert_frame_equal(table[COLS].reset_index(drop=True), in_process[COLS].reset_index(drop=True))
    states = unit_states(RunStore(tmp_path / "run"), _config(tiny_dataset, trained_cache, tmp_path).entries())
    assert states.state.tolist() == ["done", "done"] and states.cells.tolist() == ["2/2", "2/2"]


def test_killed_jobs_are_resubmitted_without_duplicate_rows(tiny_dataset, trained_cache, in_process, tmp_path,
                                                            monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("LDCT_BENCH_KILL_AFTER_CELLS", "1")  # each job dies hard after its first cell
    with pytest.raises(JobsIncomplete, match="2 job\\(s\\) failed"):
        _jobs(tiny_dataset, trained_cache, out)
    states = unit_states(RunStore(out), _config(tiny_dataset, trained_cache, out).entries())
    assert states.state.tolist() == ["killed", "killed"] and states.cells.tolist() == ["1/2", "1/2"]
    first_jobs = set(states.job)

    shown = CliRunner().invoke(main, ["run", "--status", "--out", str(out), "--methods", "ldct,redcnn", "--doses", "10,25",
                                      "--train-doses", "10", "--anatomies", "chest"])
    assert shown.exit_code == 0 and shown.output.count(" killed ") == 2

    monkeypatch.delenv("LDCT_BENCH_KILL_AFTER_CELLS")
    table = _jobs(tiny_dataset, trained_cache, out)
    assert not table.duplicated(COLS[:-1]).any()
    pd.testing.assert_frame_equal(table[COLS].reset_index(drop=True), in_process[COLS].reset_index(drop=True))
    states = unit_states(RunStore(out), _config(tiny_dataset, trained_cache, out).entries())
    assert states.state.tolist() == ["done", "done"] and not set(states.job) & first_jobs  # new jobs did the rest


def test_a_done_run_submits_nothing_unless_asked_to_rescore(tiny_dataset, trained_cache, tmp_path):
    out = tmp_path / "run"
    table = _jobs(tiny_dataset, trained_cache, out)
    before = sorted(p.name for p in (out / "jobs").iterdir())
    _jobs(tiny_dataset, trained_cache, out)
    assert sorted(p.name for p in (out / "jobs").iterdir()) == before
    again = _jobs(tiny_dataset, trained_cache, out, rescore=("redcnn",))  # one job: redcnn's unit, scored anew
    jobs = {p.name.split("_")[0] for p in (out / "jobs").iterdir()}
    assert len(jobs) == len({name.split("_")[0] for name in before}) + 1
    pd.testing.assert_frame_equal(again[COLS].reset_index(drop=True), table[COLS].reset_index(drop=True))
