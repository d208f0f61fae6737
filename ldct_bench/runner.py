"""The runner: the one place that ties data, methods and metrics together.

For each method of a RunConfig (and with --oracle each specialist on one unseen dose): load
its checkpoint for this dataset, profile, seen doses and overrides (committed reference
weights first, then the cache) or train it; then, cell by cell over the dose x anatomy
matrix, denoise every test slice, score it and write the cell atomically (evaluate.py).
A re-run with the same --out skips finished cells. The fan-out (fanout.py) runs the same
steps as jobs.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from filelock import FileLock, Timeout

from .checkpoints import training_domain
from .config import RunConfig, upgrade_identity
from .data.dataset import LDCTDataset, default_cache_dir, sha256_file
from .environment import git_commit, hardware, versions
from .evaluate import evaluate_cells, resample_ratios
from .methods import Method
from .plan import EntryPlan, RunPlan, resolve
from .results import RunStore
from .training import train_method


class Run:
    """One run folder being filled: its plan (and config), store, manifest and test data."""

    def __init__(self, plan: RunPlan, store: RunStore, manifest: dict, dataset: LDCTDataset, progress: bool,
                 cli_args: dict | None = None):
        self.plan, self.config, self.store, self.manifest, self.dataset = plan, plan.config, store, manifest, dataset
        self.progress = progress
        self.cli_args = cli_args or {}  # this command's, for the record of work it adds to a finished run
        self.t0 = time.perf_counter()
        self.worked = False  # whether this process denoised anything
        self._iq = None

    @classmethod
    def open(cls, plan: RunPlan, cli_args: dict | None = None, progress: bool = True) -> Run:
        """Check the run folder against the config, open the test data, write the first manifest (callers hold
        run_folder_lock, which has checked that --out can be made)."""
        config = plan.config
        store = RunStore(config.out)
        manifest = {"config": config.identity(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "cli": cli_args or {}, "timings": {}}
        if store.manifest_path().is_file() and store.has_scores():
            manifest = store.read_manifest()
            if upgrade_identity(manifest.get("config", {})) != config.identity():
                raise ValueError(f"{config.out} already holds a run with a different configuration; choose another "
                                 "--out (runs never overwrite each other).")
            store.unpack()  # a cloned run: its cells back from results.parquet, so that what is done stays done
        # a manifest with no scores is a run that failed before its first cell: the corrected command takes it over
        if config.iq and manifest.get("iq"):
            from .iq import iq_config

            if manifest["iq"]["set"] != iq_config(config).name:
                raise ValueError(f"{config.out} holds task-based scores of another image-quality set "
                                 f"({manifest['iq']['config']['realisations']} realisations per class); give that "
                                 "--iq-realisations or choose another --out.")
        finished = "finished" in manifest  # re-run of a finished run: its record stays as it is unless work is left
        if not finished:
            manifest.update({"versions": versions(), "git_commit": git_commit(), "hardware": hardware(config.device)})
        t = time.perf_counter()
        ds = config.dataset(progress=progress)
        for anatomy in config.protocol.anatomies:
            if not ds.patients(anatomy, config.eval_splits):
                raise ValueError(f"{config.data} has no {'/'.join(config.eval_splits)} patients of {anatomy} "
                                 f"({len(ds.patients(anatomy, ('train', 'val', 'test')))} in all); score methods "
                                 "trained elsewhere on every one of its patients with --train-data embedded.")
        if not finished:
            manifest.setdefault("timings", {})["data_s"] = round(time.perf_counter() - t, 2)
            store.write_manifest(manifest)  # only once the inputs are known to be good
        manifest["dataset"] = {"root": str(ds.root), "name": ds.root.name, "config": ds.manifest.get("config"),
                               "pixel_mm": ds.pixel_mm, "acquisitions": list(plan.test.acquisitions)}
        manifest["train_dataset"] = plan.train.to_dict()  # what the learned methods were trained on
        return cls(plan, store, manifest, ds, progress, cli_args)

    # -- the methods (by entry label: a method, or an --oracle specialist 'redcnn@5%') ----------------------
    def checkpoint(self, label: str) -> Path | None:
        """The saved weights of `label` for this run's job, if any (None for methods that learn nothing)."""
        return self.plan.checkpoint(label)

    def needs_training(self, label: str) -> bool:
        return self.plan.entry(label).learned and (self.config.retrain or self.checkpoint(label) is None)

    def method(self, label: str) -> tuple[Method, str]:
        """`label` ready for inference, and where its weights came from (trained first when it has no checkpoint)."""
        entry = self.plan.entry(label)
        if not entry.learned:
            return for_inference(entry, self.config.device, None), "none"
        path = None if self.config.retrain else self.checkpoint(label)
        if path is None:
            why = entry.cls.unavailable()
            if why:
                raise ValueError(f"method {entry.method!r} has no checkpoint for this dataset and cannot train here: "
                                 f"{why}.")
            path = train_for_run(self.plan, label, self.progress)
        return for_inference(entry, self.config.device, path), str(path)

    def stale(self, label: str) -> str:
        """Why the scores of `label` in this folder no longer hold ('' when they do): they were made with other
        weights than the checkpoint the run would load now (a reference checkpoint retrained since, say)."""
        recorded = self.manifest.get("methods", {}).get(label)
        was = recorded.get("sha256") if isinstance(recorded, dict) else None
        path = None if self.config.retrain else self.checkpoint(label)
        if not isinstance(was, str) or path is None:
            return ""
        now = sha256_file(path)
        return "" if now == was else (f"its checkpoint {path} changed since its scores here were made (sha256 "
                                      f"{was[:12]}, now {now[:12]})")

    def refresh(self, label: str, echo) -> None:
        """Forget the scores of `label` here when they no longer hold (`stale`) or the run was asked to make them
        again (--rescore: another inference code, timings taken on a busy machine), saying why."""
        entry = self.plan.entry(label)
        asked = entry.method in self.config.rescore and (label in self.manifest.get("methods", {}) or any(
            self.store.has_cell(label, c.anatomy, c.dose) for c in entry.cells))
        why = self.stale(label) or ("--rescore asks for its scores to be made again" if asked else "")
        if why:
            echo(f"{label}: {why}; scoring it again")
            self.forget(label)

    def forget(self, label: str) -> None:
        """Score `label` again: its files go first, then its record (see RunStore.forget), with a line saying so."""
        self.store.forget(label)
        was = self.manifest.setdefault("methods", {}).pop(label, {}).get("sha256")
        self.manifest["timings"] = {k: v for k, v in self.manifest.get("timings", {}).items()
                                    if not k.startswith(f"{label}.")}
        self.manifest.setdefault("rescored", []).append({
            "method": label, "was_sha256": was, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "git_commit": git_commit(), "cli": self.cli_args})
        self.store.write_manifest(self.manifest)

    # -- the record -----------------------------------------------------------------------------------------
    def done(self, label: str) -> bool:
        return self.cells_done(label) and (not self.scores_iq(label) or all(self.store.has_iq(label, d)
                                                                             for d in self.config.protocol.doses))

    def cells_done(self, label: str) -> bool:
        return all(self.store.has_cell(label, c.anatomy, c.dose) for c in self.plan.entry(label).cells)

    def scores_iq(self, label: str) -> bool:
        """With --iq every generalist is scored on the phantom (a specialist is a yardstick of one dose only)."""
        return self.config.iq and label in self.config.methods

    def iq_set(self):
        """The image-quality phantom set, simulated the first time it is asked for; the full-dose FBP scored."""
        if self._iq is None:
            from .iq import evaluate_reference, iq_set

            t = time.perf_counter()
            self._iq = iq_set(self.config, self.progress)
            evaluate_reference(self.store, self._iq, self.config)
            self.manifest["iq"] = {"set": self._iq.root.name, "config": self._iq.config.to_dict(), "cli": self.cli_args,
                                   "git_commit": git_commit(), "versions": versions()}
            self.manifest["timings"]["iq.data_s"] = round(time.perf_counter() - t, 2)
        return self._iq

    def record(self, name: str, description: dict, timings: dict[str, float]) -> None:
        """What ran as `name` (see `describe`) and its seconds per stage, added to the manifest."""
        self.worked = True
        self.manifest.setdefault("methods", {})[name] = description
        for key, seconds in timings.items():
            full = f"{name}.{key}"
            self.manifest["timings"][full] = round(self.manifest["timings"].get(full, 0) + seconds, 2)
        self.store.write_manifest(self.manifest)

    def finish(self) -> pd.DataFrame:
        """Gather every finished cell into results.parquet and close the manifest (a run that had nothing left
        to do keeps the manifest of the run that did the work)."""
        table = self.store.consolidate()
        if "finished" in self.manifest and not self.worked:
            return table
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if "finished" in self.manifest:  # work added to a finished run (--iq, say): its own time, beside the first
            self.manifest["timings"]["added_s"] = round(self.manifest["timings"].get("added_s", 0)
                                                        + time.perf_counter() - self.t0, 2)
            self.manifest["updated"] = now
        else:
            self.manifest["timings"]["total_s"] = round(time.perf_counter() - self.t0, 2)
            self.manifest["finished"] = now
        self.manifest["rows"] = int(len(table))
        self.store.write_manifest(self.manifest)
        return table


def check_writable(folder: Path) -> None:
    """One sentence, before any work, when `folder` cannot be made: a file in its way or no right to write."""
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == Path(p.anchor))
    if not existing.is_dir():
        raise ValueError(f"--out {folder}: {existing} is a file, not a folder; choose another --out.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {folder}: {existing} is not writable; choose another --out.")


def for_inference(entry: EntryPlan, device: str, checkpoint: Path | None) -> Method:
    """The entry's method ready to denoise: its checkpoint's weights with the run's overrides on top (a method that
    learns nothing is simply built)."""
    cls = entry.cls
    method = (cls.load(checkpoint, device, entry.overrides) if checkpoint
              else cls(cls.configure(entry.profile, entry.overrides), device))
    return method.for_inference()


def describe(method: Method, source: str) -> dict:
    """A method as the manifest records it: where its weights came from, its size, its config and its training
    budget (from the checkpoint's own manifest)."""
    out = {"source": source, "parameters": method.n_parameters(), "description": method.description,
           "config": method.config.to_dict(), "learned": method.learned}
    if method.learned and Path(source).is_file():  # which weights exactly, whether or not a manifest vouched for them
        out["sha256"] = sha256_file(Path(source))
    trained = Path(source).parent / "manifest.json" if method.learned else None
    if trained is not None and trained.is_file():
        m = json.loads(trained.read_text())
        out["training"] = {k: m.get(k) for k in ("steps", "patches_seen", "training_flops", "flops_per_step",
                                                 "wall_time_s", "plateaued", "hardware")}
        out["training"]["learning_curve"] = learning_curve(trained.parent / "train_log.csv")
    return out


def learning_curve(log: Path) -> list[list]:
    """[stage, step, elapsed_s, val_psnr] of every validated row of a training log (empty where there is none), for
    the report's rankings at equal compute."""
    if not log.is_file():
        return []
    try:
        rows = pd.read_csv(log)
    except (ValueError, OSError):
        return []
    if not {"stage", "step", "elapsed_s", "val_psnr"} <= set(rows.columns):
        return []
    numbers = rows[["step", "elapsed_s", "val_psnr"]].apply(pd.to_numeric, errors="coerce")
    keep = numbers.notna().all(axis=1) & numbers.abs().lt(float("inf")).all(axis=1)  # a log is input: numbers only
    return [[str(stage), int(step), float(elapsed), float(psnr)] for stage, (step, elapsed, psnr)
            in zip(rows.loc[keep, "stage"], numbers[keep].itertuples(index=False))]


def domain_note(label: str, domain: dict | None, ds: LDCTDataset, resample: bool) -> str:
    """One line when patients of the evaluated data lie outside what `label` was trained at ('' otherwise)."""
    ratios = resample_ratios(ds, domain)
    if not ratios:
        return ""
    pixels = ds.pixel_mm
    sizes = sorted({round(pixels[p] if isinstance(pixels, dict) else pixels, 2) for p in ratios})
    lo, hi = domain["pixel_mm"]
    trained = f"{lo:.2f} mm" if abs(hi - lo) < 1e-6 else f"{lo:.2f}-{hi:.2f} mm"
    return (f"{label}: {len(ratios)} patient(s) of {ds.root.name} have {', '.join(f'{s:g}' for s in sizes)} mm pixels, "
            f"outside the {trained} it was trained at; "
            + ("they are denoised at its training pixel size (--resample)." if resample else
               "--resample denoises them at its training pixel size."))


def train_for_run(plan: RunPlan, label: str, progress: bool = True) -> Path:
    """Train the entry `label` of the plan on its seen doses (simulating the training splits where they are
    missing, and training on the dataset that holds them); returns the weights."""
    config, entry = plan.config, plan.entry(label)
    ds = config.train_dataset(progress, entry.seen_doses)
    manifest = train_method(entry.job, ds, device=config.device, retrain=config.retrain,
                            cache_dir=config.cache_dir, progress=progress)
    if not manifest["complete"]:
        raise RuntimeError(f"training {label} stopped before its last iteration; run again to resume.")
    return Path(manifest["dir"]) / "weights.safetensors"


@contextmanager
def run_folder_lock(config: RunConfig, echo=print):
    """One process fills a run folder at a time: a second run into it waits, then finds its cells done. The lock
    lives in the cache, so that a run folder holds only results."""
    check_writable(config.out)  # before anything is made, the lock included
    key = hashlib.sha256(str(config.out.resolve()).encode()).hexdigest()[:16]
    path = Path(config.cache_dir or default_cache_dir()) / "locks" / f"run-{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        echo(f"{config.out} is being filled by another run; waiting for it to end ...")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def run_matrix(config: RunConfig, *, cli_args: dict | None = None, progress: bool = True, echo=print) -> pd.DataFrame:
    """Run every method of `config` on every (anatomy, dose) cell in this process; returns the results table."""
    plan = resolve(config)  # before anything is written: a spec that names nothing is one sentence here
    with run_folder_lock(config, echo):
        return _fill(plan, cli_args, progress, echo)


def _fill(plan: RunPlan, cli_args: dict | None, progress: bool, echo) -> pd.DataFrame:
    config = plan.config
    run = Run.open(plan, cli_args, progress)
    for entry in plan.entries:
        run.refresh(entry.label, echo)
        if run.done(entry.label):
            echo(f"{entry.label}: all {len(entry.cells)} cells already done, skipping")
            continue
        t = time.perf_counter()
        method, source = run.method(entry.label)
        load_s = time.perf_counter() - t
        domain = training_domain(Path(source)) if method.learned else None
        if (said := domain_note(entry.label, domain, run.dataset, config.resample)):
            echo(said)
        timings = {}  # cells done before (this pass adds --iq) keep the timings they were recorded with
        if not run.cells_done(entry.label):
            timings = {"load_s": load_s, **evaluate_cells(run.store, method, run.dataset, entry.cells, plan,
                                                          progress=progress, label=entry.label, domain=domain)}
        if run.scores_iq(entry.label):
            from .iq import evaluate_iq

            timings.update(evaluate_iq(run.store, method, run.iq_set(), config, label=entry.label, progress=progress))
        run.record(entry.label, describe(method, source), timings)
    return run.finish()
