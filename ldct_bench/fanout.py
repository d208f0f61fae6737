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
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from .atomic import atomic_write_json
from .checkpoints import training_domain
from .config import Entry, RunConfig
from .data.resolve import is_embedded
from .evaluate import evaluate_cells
from .plan import EntryPlan, RunPlan, resolve
from .protocol import Cell
from .results import RunStore
from .runner import Run, describe, for_inference, run_folder_lock, train_for_run

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
    label: str  # the run entry: a method, or an --oracle specialist
    anatomy: str
    cells: list[Cell]

    @property
    def key(self) -> str:
        return f"{self.label}/{self.anatomy}"


def units(entries: list[Entry | EntryPlan]) -> list[Unit]:
    return [Unit(e.label, a, cells) for e in entries
            for a in dict.fromkeys(c.anatomy for c in e.cells) if (cells := [c for c in e.cells if c.anatomy == a])]


# ---------------------------------------------------------------------------------------------- the jobs
def reported(folder: str, body, *args):
    """Run a job's `body` and leave its outcome as JSON beside submitit's files, so that `run --status` never
    unpickles anything from a run folder (a folder received from someone else could hold a pickle that runs code)."""
    import submitit

    path = Path(folder) / f"{submitit.JobEnvironment().job_id}_outcome.json"
    try:
        out = body(*args)
    except BaseException as exc:
        atomic_write_json(path, {"state": "failed", "error": f"{type(exc).__name__}: {exc}"})
        raise
    atomic_write_json(path, {"state": "done"})
    return out


def train_job(plan: RunPlan, label: str) -> str:
    return str(train_for_run(plan, label, progress=False))


def unit_job(plan: RunPlan, unit: Unit, checkpoint: str | None) -> dict:
    """Evaluate one unit into the store at the plan's --out; returns its timings and what ran."""
    config = plan.config
    method = for_inference(plan.entry(unit.label), config.device, Path(checkpoint) if checkpoint else None)
    ds = config.dataset(sorted({c.dose for c in unit.cells}), [unit.anatomy], progress=False)
    die_after = int(os.environ.get("LDCT_BENCH_KILL_AFTER_CELLS", "0"))  # test hook: die as a scheduler kill would
    written = {"n": 0}

    def after_cell():
        written["n"] += 1
        if die_after and written["n"] >= die_after:
            os._exit(137)

    domain = training_domain(Path(checkpoint)) if checkpoint else None
    spent = evaluate_cells(RunStore(config.out), method, ds, unit.cells, plan, progress=False, after_cell=after_cell,
                           label=unit.label, domain=domain)
    return {"timings": spent, "method": describe(method, checkpoint or "none")}


# --------------------------------------------------------------------------------------------- the driver
def unit_states(store: RunStore, entries: list[Entry | EntryPlan]) -> pd.DataFrame:
    """done / running / failed / killed / pending for every unit, from the store's cells and submitit's files."""
    jobs = _read_jobs(store)
    rows = []
    for u in units(entries):
        have = sum(store.has_cell(u.label, c.anatomy, c.dose) for c in u.cells)
        job = jobs.get(u.key)
        state = "done" if have == len(u.cells) else "pending" if job is None else _job_state(store, job)
        rows.append({"unit": u.key, "state": state, "cells": f"{have}/{len(u.cells)}",
                     "job": job["job_id"] if job else "", "log": _log_path(store, job) if job else ""})
    return pd.DataFrame(rows)


def run_matrix_jobs(config: RunConfig, executor_kind: str, options: ClusterOptions, *, cli_args: dict | None = None,
                    progress: bool = True, echo=print) -> pd.DataFrame:
    """The same results store as runner.run_matrix, computed by one job per unit (without --iq, which runs in
    process: run_matrix adds it to the same folder afterwards)."""
    if config.iq:
        raise ValueError("--iq runs in this process: run the matrix with --executor first, then the same command "
                         "with --iq and without --executor into the same --out.")
    plan = resolve(config)
    with run_folder_lock(config, echo):
        return _submit(plan, executor_kind, options, cli_args, progress, echo)


def _submit(plan: RunPlan, executor_kind: str, options: ClusterOptions, cli_args, progress: bool, echo):
    config = plan.config
    run = Run.open(plan, cli_args, progress)
    run.manifest["executor"] = {"kind": executor_kind, **asdict(options)}
    for entry in plan.entries:
        run.refresh(entry.label, echo)
    ex = make_executor(executor_kind, _jobs_dir(run.store), options)
    todo = [u for u in units(plan.entries)
            if not all(run.store.has_cell(u.label, c.anatomy, c.dose) for c in u.cells)]
    states = unit_states(run.store, plan.entries).set_index("unit")["state"]
    busy = [u for u in todo if states[u.key] == "running"]
    if busy:
        echo(f"{len(busy)} unit(s) still running from an earlier submission ({', '.join(u.key for u in busy)}); "
             "they are left alone: check with --status and run again once they have ended.")
    todo = [u for u in todo if u not in busy]
    failed = _train_missing(run, ex, executor_kind, todo, echo)
    failed += _evaluate_units(run, ex, executor_kind, [u for u in todo if u.label not in failed], echo)
    table = run.finish()
    if failed or busy:
        what = f"{len(failed)} job(s) failed ({', '.join(failed)})" if failed else f"{len(busy)} unit(s) were still running"
        raise JobsIncomplete(f"{what}; see `ldct-bench run --status --out {config.out}` for their logs, and run the "
                             "same command again to resubmit what is missing.")
    return table


def _train_missing(run: Run, ex, executor_kind: str, todo: list[Unit], echo) -> list[str]:
    """Train, one job per entry, every learned method of `todo` without a checkpoint; the entries that failed."""
    to_train = sorted({u.label for u in todo if run.needs_training(u.label)})
    if to_train and is_embedded(run.config.trained_on):  # simulate the training splits once, not in every job
        for doses in dict.fromkeys(run.plan.entry(label).seen_doses for label in to_train):
            run.config.train_dataset(run.progress, doses)
    submitted = {m: ex.submit(reported, str(_jobs_dir(run.store)), train_job, run.plan, m) for m in to_train}
    _record_jobs(run.store, {f"train:{m}": job for m, job in submitted.items()}, executor_kind)
    if submitted:
        echo(f"training {', '.join(to_train)} as {len(submitted)} job(s)")
    return [m for m, job in submitted.items() if _result(job) is None]


def _evaluate_units(run: Run, ex, executor_kind: str, todo: list[Unit], echo) -> list[str]:
    """One job per unit, each given its method's checkpoint; the keys of the units that failed."""
    checkpoints = {label: run.checkpoint(label) for label in {u.label for u in todo}}
    runnable = [u for u in todo if checkpoints[u.label] or not run.plan.entry(u.label).learned]
    jobs = {u.key: ex.submit(reported, str(_jobs_dir(run.store)), unit_job, run.plan, u,
                             str(checkpoints[u.label]) if checkpoints[u.label] else None) for u in runnable}
    _record_jobs(run.store, jobs, executor_kind)
    echo(f"submitted {len(jobs)} unit job(s) to the {executor_kind} executor; logs in {_jobs_dir(run.store)}")
    failed = []
    for key, job in jobs.items():
        res = _result(job)
        if res is None:
            failed.append(key)
            continue
        run.record(key.rsplit("/", 1)[0], res["method"], res["timings"])
    return failed


def _record_jobs(store: RunStore, submitted: dict, executor_kind: str) -> None:
    jobs = _read_jobs(store)
    jobs.update({k: {"job_id": job.job_id, "executor": executor_kind} for k, job in submitted.items()})
    _write_jobs(store, jobs)


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


def _jobs_dir(store: RunStore) -> Path:
    """Where submitit keeps a run's job files (and each job its JSON outcome)."""
    return store.root / "jobs"


def _jobs_path(store: RunStore) -> Path:
    return store.root / "jobs.json"


# what submitit writes as a job id: a process id (local executor), a SLURM job id, or an array job's id_index
JOB_ID = re.compile(r"[0-9]{1,12}(_[0-9]{1,9})?")


def _read_jobs(store: RunStore) -> dict:
    """jobs.json, checked: it names files (logs, outcomes) and processes, so every entry must be what this module
    writes, {unit: {"job_id": submitit's id, "executor": local or slurm}}; anything else is one sentence."""
    p = _jobs_path(store)
    if not p.is_file():
        return {}
    fix = f"delete it to resubmit every unfinished unit (`ldct-bench run` with the same options and --out {store.root})"
    try:
        jobs = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{p} is not a jobs file ldct-bench wrote ({type(exc).__name__}: not JSON); {fix}.") from None
    if not isinstance(jobs, dict):
        raise ValueError(f"{p} is not a jobs file ldct-bench wrote (a {type(jobs).__name__}, not an object of units); "
                         f"{fix}.")
    for unit, job in jobs.items():
        if not isinstance(job, dict) or not isinstance(job.get("job_id"), str) or job.get("executor") not in EXECUTORS:
            raise ValueError(f"{p}: unit {unit!r} is not a job record ({{'job_id': ..., 'executor': 'local' or "
                             f"'slurm'}}); {fix}.")
        if not JOB_ID.fullmatch(job["job_id"]):
            raise ValueError(f"{p}: unit {unit!r} has job id {job['job_id']!r}, which is not a submitit job id "
                             f"(digits, or digits_digits for an array job); {fix}.")
    return jobs


def _write_jobs(store: RunStore, jobs: dict) -> None:
    atomic_write_json(_jobs_path(store), jobs)


def _log_path(store: RunStore, job: dict) -> str:
    return str(_jobs_dir(store) / f"{job['job_id']}_0_log.err")


def _job_state(store: RunStore, job: dict) -> str:
    """From the job's own JSON outcome (never its result pickle), else whether its process or SLURM job lives."""
    outcome = _jobs_dir(store) / f"{job['job_id']}_outcome.json"
    try:
        state = json.loads(outcome.read_text()).get("state")
    except (OSError, ValueError, AttributeError):
        state = None
    if state in ("done", "failed"):
        return state  # 'done' with cells missing cannot happen: cells come first
    if job["executor"] == "local":
        try:
            os.kill(int(job["job_id"]), 0)  # a local job's id is its process id
            return "running"
        except (OSError, ValueError):
            return "killed"
    import submitit

    state = submitit.SlurmJob(_jobs_dir(store), job["job_id"]).state
    return {"PENDING": "running", "RUNNING": "running", "REQUEUED": "running"}.get(state, state.lower())
