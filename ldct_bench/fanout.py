"""Fan-out of the dose x anatomy matrix as independent jobs through submitit (SLURM, or its local executor).

A unit is one method on one anatomy's doses: it loads the method's checkpoint, denoises and
scores its cells and writes them into the shared results store, cell by cell, atomically, so
jobs never clobber each other and a killed job loses at most the cell it was on. Methods
without a checkpoint are first trained, one job per method. `jobs.json` in the run folder
records which job ran which unit, for `ldct-bench run --status`; running the same command
again submits only the units that are not done and not still running.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from .atomic import atomic_write_json
from .methods import get_method
from .protocol import Protocol
from .results import RunStore
from .runner import (describe, evaluate_cells, finish_run, needs_training, open_dataset, prepare_run,
                     saved_checkpoint, train_method)

EXECUTORS = ("local", "slurm")


@dataclass
class ClusterOptions:
    """What each job asks the scheduler for (SLURM); the local executor ignores all but the time limit."""

    partition: str | None = None
    gpus_per_job: int = 0
    cpus_per_job: int = 2
    mem_gb: int = 16
    time_min: int = 120
    extra: dict = field(default_factory=dict)  # any other sbatch option, e.g. {"account": "x", "qos": "y"}


def make_executor(kind: str, folder: Path, options: ClusterOptions):
    import submitit

    if kind == "local":
        ex = submitit.LocalExecutor(folder=str(folder))
        ex.update_parameters(timeout_min=options.time_min)
    elif kind == "slurm":
        ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        ex.update_parameters(timeout_min=options.time_min, gpus_per_node=options.gpus_per_job,
                             cpus_per_task=options.cpus_per_job, mem_gb=options.mem_gb, slurm_partition=options.partition,
                             slurm_additional_parameters=options.extra or None)
    else:
        raise ValueError(f"--executor {kind!r} is not one of {', '.join(EXECUTORS)}.")
    return ex


@dataclass
class Unit:
    method: str
    anatomy: str
    cells: list  # [(anatomy, dose, seen)]

    @property
    def key(self) -> str:
        return f"{self.method}/{self.anatomy}"


def units(methods: list[str], protocol: Protocol) -> list[Unit]:
    return [Unit(m, a, [c for c in protocol.cells() if c[0] == a]) for m in methods for a in protocol.anatomies]


# ---------------------------------------------------------------------------------------------- the jobs
def train_job(name: str, profile: str, data: str, seen, anatomies, seed: int, device: str, cache_dir) -> str:
    ds = open_dataset(data, seen, anatomies, ("train", "val"), cache_dir, progress=False)
    man = train_method(name, profile, ds, seen, anatomies, seed=seed, device=device, cache_dir=cache_dir, progress=False)
    if not man["complete"]:
        raise RuntimeError(f"training {name} stopped before its last iteration")
    return str(Path(man["dir"]) / "weights.safetensors")


def unit_job(out: str, unit: dict, checkpoint: str | None, data: str, seed: int, device: str, metrics, cache_dir,
             batch_size: int, examples: int, save_images: bool) -> dict:
    """Evaluate one unit into the store at `out`; returns its timings and the method's description."""
    u = Unit(**unit)
    cls = get_method(u.method)
    method = (cls.load(Path(checkpoint), device) if checkpoint else cls(None, device)).for_inference()
    ds = open_dataset(data, sorted({d for _, d, _ in u.cells}), [u.anatomy], ("test",), cache_dir, progress=False)
    die_after = int(os.environ.get("LDCT_BENCH_KILL_AFTER_CELLS", "0"))  # test hook: die as a scheduler kill would
    written = {"n": 0}

    def after_cell():
        written["n"] += 1
        if die_after and written["n"] >= die_after:
            os._exit(137)

    spent = evaluate_cells(RunStore(Path(out)), u.method, method, ds, u.cells, seed=seed, device=device,
                           metrics=metrics, batch_size=batch_size, examples=examples, save_images=save_images,
                           progress=False, after_cell=after_cell)
    return {"timings": spent, "method": describe(method, {"source": checkpoint or "none"})}


# --------------------------------------------------------------------------------------------- the driver
def unit_states(store: RunStore, methods: list[str], protocol: Protocol) -> pd.DataFrame:
    """done / running / failed / killed / pending for every unit, from the store's cells and submitit's files."""
    jobs = _read_jobs(store)
    rows = []
    for u in units(methods, protocol):
        have = sum(store.has_cell(u.method, a, d) for a, d, _ in u.cells)
        job = jobs.get(u.key)
        state = "done" if have == len(u.cells) else "pending" if job is None else _job_state(store, job)
        rows.append({"unit": u.key, "state": state, "cells": f"{have}/{len(u.cells)}",
                     "job": job["job_id"] if job else "", "log": _log_path(store, job) if job else ""})
    return pd.DataFrame(rows)


def run_matrix_jobs(methods: list[str], protocol: Protocol, out: Path, executor_kind: str, *, options: ClusterOptions,
                    data: str = "embedded", profile: str = "quick", device: str = "cpu", seed: int = 0,
                    retrain: bool = False, metrics=("rmse", "psnr", "ssim"), cache_dir: Path | None = None,
                    batch_size: int = 8, examples: int = 1, save_images: bool = False, cli_args: dict | None = None,
                    progress: bool = True, echo=print) -> pd.DataFrame:
    """The same results store as runner.run_matrix, computed by one job per unit."""
    t0 = time.perf_counter()
    store, manifest, ds = prepare_run(methods, protocol, out, data=data, profile=profile, device=device, seed=seed,
                                      retrain=retrain, metrics=metrics, cache_dir=cache_dir, cli_args=cli_args,
                                      progress=progress)
    manifest["executor"] = {"kind": executor_kind, **asdict(options)}
    ex = make_executor(executor_kind, store.root / "jobs", options)
    todo = [u for u in units(methods, protocol) if not all(store.has_cell(u.method, a, d) for a, d, _ in u.cells)]
    states = unit_states(store, methods, protocol).set_index("unit")["state"]
    busy = [u for u in todo if states[u.key] == "running"]
    if busy:
        echo(f"{len(busy)} unit(s) still running from an earlier submission ({', '.join(u.key for u in busy)}); "
             "they are left alone: check with --status and run again once they have ended.")
    todo = [u for u in todo if u not in busy]
    jobs = _read_jobs(store)

    # 1. train what has no checkpoint, one job per method
    learned = sorted({u.method for u in todo if get_method(u.method).learned})
    to_train = [m for m in learned if needs_training(m, profile, ds, protocol, seed, retrain, cache_dir)]
    if to_train and data == "embedded":
        open_dataset(data, protocol.seen_doses, protocol.anatomies, ("train", "val"), cache_dir, progress=progress)
    submitted = {m: ex.submit(train_job, m, profile, data, protocol.seen_doses, protocol.anatomies, seed, device,
                              cache_dir) for m in to_train}
    for m, job in submitted.items():
        jobs[f"train:{m}"] = {"job_id": job.job_id, "executor": executor_kind}
    _write_jobs(store, jobs)
    if submitted:
        echo(f"training {', '.join(to_train)} as {len(submitted)} job(s)")
    failed = [m for m, job in submitted.items() if _result(job) is None]
    checkpoints = {}
    for m in {u.method for u in todo} - set(failed):
        path = saved_checkpoint(m, profile, ds, protocol, seed, cache_dir) if get_method(m).learned else None
        checkpoints[m] = str(path) if path else None

    # 2. evaluate every unit that is not done
    runnable = [u for u in todo if u.method not in failed and (checkpoints[u.method] or not get_method(u.method).learned)]
    unit_jobs = {u.key: ex.submit(unit_job, str(store.root), asdict(u), checkpoints[u.method], data, seed, device,
                                  tuple(metrics), cache_dir, batch_size, examples, save_images) for u in runnable}
    for k, job in unit_jobs.items():
        jobs[k] = {"job_id": job.job_id, "executor": executor_kind}
    _write_jobs(store, jobs)
    echo(f"submitted {len(unit_jobs)} unit job(s) to the {executor_kind} executor; logs in {store.root / 'jobs'}")
    for k, job in unit_jobs.items():
        res = _result(job)
        if res is None:
            failed.append(k)
            continue
        name = k.split("/")[0]
        manifest.setdefault("methods", {})[name] = res["method"]
        for t, v in res["timings"].items():
            manifest["timings"][f"{name}.{t}"] = round(manifest["timings"].get(f"{name}.{t}", 0) + v, 2)
    table = finish_run(store, manifest, t0)
    if failed or busy:
        what = f"{len(failed)} job(s) failed ({', '.join(failed)})" if failed else f"{len(busy)} unit(s) were still running"
        raise JobsIncomplete(f"{what}; see `ldct-bench run --status --out {out}` for their logs, and run the same "
                             "command again to resubmit what is missing.")
    return table


class JobsIncomplete(RuntimeError):
    """Some units did not finish; the store holds everything that did."""


def _result(job):
    """Wait for `job` and return what it returned; None when it raised or died (its log says why)."""
    while not job.done():
        time.sleep(0.5)
    from submitit.local.local import LocalJob

    if isinstance(job, LocalJob) and not job.paths.result_pickle.exists():
        return None  # killed: a local job leaves no result (submitit would wait for one on a shared file system)
    try:
        return job.result()
    except Exception:  # submitit re-raises the job's error, or reports a job that died without a result
        return None


def _jobs_path(store: RunStore) -> Path:
    return store.root / "jobs.json"


def _read_jobs(store: RunStore) -> dict:
    p = _jobs_path(store)
    return json.loads(p.read_text()) if p.is_file() else {}


def _write_jobs(store: RunStore, jobs: dict) -> None:
    atomic_write_json(_jobs_path(store), jobs)


def _log_path(store: RunStore, job: dict) -> str:
    return str(store.root / "jobs" / f"{job['job_id']}_0_log.err")


def _job_state(store: RunStore, job: dict) -> str:
    import pickle

    result = store.root / "jobs" / f"{job['job_id']}_0_result.pkl"
    if result.is_file():
        with open(result, "rb") as f:
            outcome = pickle.load(f)[0]
        return "failed" if outcome == "error" else "done"  # 'done' with cells missing cannot happen: cells come first
    if job["executor"] == "local":
        try:
            os.kill(int(job["job_id"]), 0)  # a local job's id is its process id
            return "running"
        except (OSError, ValueError):
            return "killed"
    import submitit

    state = submitit.SlurmJob(store.root / "jobs", job["job_id"]).state
    return {"PENDING": "running", "RUNNING": "running", "REQUEUED": "running"}.get(state, state.lower())
