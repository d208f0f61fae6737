"""The runner: the one place that ties data, methods and metrics together.

For each method: load its checkpoint for this dataset/profile/seen-doses (committed
reference weights first, then the cache) or train it; then, cell by cell over the
dose x anatomy matrix, denoise every test slice, score every window and metric, and
write the cell atomically. A re-run with the same --out skips finished cells.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .checkpoints import checkpoint_key, find_checkpoint, training_dir
from .data.dataset import LDCTDataset, PhantomConfig, default_cache_dir
from .data.phantoms import ANATOMIES
from .environment import git_commit, hardware, versions
from .methods import Method, get_method
from .metrics import DEFAULT_METRICS, score_batch, windows_for
from .protocol import Protocol, dose_label
from .results import RunStore
from .training import TrainJob, centre_slice, fit


def resolve_device(spec: str) -> str:
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {spec}: CUDA is not available on this machine; use --device cpu or auto.")
    if not (spec == "cpu" or spec.startswith("cuda")):
        raise ValueError(f"--device {spec!r} is not a device; use auto, cpu or cuda[:N].")
    return spec


def open_dataset(spec: str, doses, anatomies, splits, cache_dir: Path | None = None,
                 config: PhantomConfig | None = None, progress: bool = True) -> LDCTDataset:
    """'embedded' (simulated on demand), an imported dataset's name, or a dataset folder."""
    if spec == "embedded":
        return LDCTDataset.embedded(config or PhantomConfig(), doses=doses, anatomies=anatomies, splits=splits,
                                    cache_dir=cache_dir, progress=progress)
    path = Path(spec)
    if not path.exists():
        named = Path(cache_dir or default_cache_dir()) / spec
        if spec in ("mayo2016", "mayo2020") and not named.exists():
            raise FileNotFoundError(f"--data {spec}: not imported yet; run `ldct-bench data import --source {spec} --root DIR` first.")
        path = named
    if not path.is_dir():
        raise FileNotFoundError(f"--data {spec}: no such dataset folder.")
    ds = LDCTDataset(path)
    for a in anatomies:
        have = ds.doses(a)
        missing = [d for d in doses if not any(abs(d - h) < 1e-6 for h in have)]
        if missing:
            raise ValueError(f"dataset {path} has no {', '.join(dose_label(d) for d in missing)} dose for {a}; "
                             f"it has {', '.join(dose_label(d) for d in have)} (import extra doses with --doses).")
    return ds


def train_method(name: str, profile: str, ds: LDCTDataset, doses, anatomies, *, seed: int = 0, device: str = "cpu",
                 out: Path | None = None, retrain: bool = False, time_budget: float | None = None,
                 overrides: dict | None = None, cache_dir: Path | None = None, progress: bool = True) -> dict:
    cls = get_method(name)
    if not cls.learned:
        raise ValueError(f"method {name!r} has nothing to train.")
    torch.manual_seed(seed)  # the initial weights are part of what a seed reproduces (and the same on every rank)
    method = cls(cls.Config.profile(profile, **(overrides or {})), device)
    key = checkpoint_key(profile, ds.root.name, doses, anatomies, seed)
    out = Path(out) if out else training_dir(name, key, cache_dir)
    if retrain and (out / "state.pt").exists():
        (out / "state.pt").unlink()
    job = TrainJob(name, profile, tuple(doses), tuple(anatomies), ds.root.name, seed)
    manifest = fit(method, ds, job, out, time_budget_s=time_budget, progress=progress, resume=not retrain)
    manifest["dir"] = str(out)
    return manifest


def load_or_train(name: str, profile: str, ds: LDCTDataset, seen, anatomies, *, seed: int, device: str,
                  retrain: bool, cache_dir: Path | None, progress: bool = True) -> tuple[Method, dict]:
    cls = get_method(name)
    if not cls.learned:
        return cls(None, device), {"source": "none"}
    key = checkpoint_key(profile, ds.root.name, seen, anatomies, seed)
    path = None if retrain else find_checkpoint(name, key, cache_dir)
    if path is None:
        why = cls.unavailable()
        if why:
            raise ValueError(f"method {name!r} has no checkpoint for this dataset and cannot train here: {why}.")
        man = train_method(name, profile, ds, seen, anatomies, seed=seed, device=device, retrain=retrain,
                           cache_dir=cache_dir, progress=progress)
        if not man["complete"]:
            raise RuntimeError(f"training {name} stopped early; run again to resume.")
        path = Path(man["dir"]) / "weights.safetensors"
    method = cls.load(path, device)
    return method, {"source": str(path)}


def prepare_run(methods: list[str], protocol: Protocol, out: Path, *, data: str, profile: str, device: str, seed: int,
                retrain: bool, metrics, cache_dir: Path | None, cli_args: dict | None, progress: bool
                ) -> tuple[RunStore, dict, LDCTDataset]:
    """Check the run folder against its configuration, open the test data, write the first manifest."""
    store = RunStore(out)
    config = {"methods": methods, "protocol": protocol.to_dict(), "data": data, "profile": profile, "seed": seed,
              "metrics": list(metrics), "retrain": retrain}
    if store.manifest_path().is_file():
        old = store.read_manifest()
        if old.get("config") != config:
            raise ValueError(f"{out} already holds a run with a different configuration; choose another --out "
                             "(runs never overwrite each other).")
        manifest = old
    else:
        manifest = {"config": config, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "cli": cli_args or {}, "timings": {}}
    manifest.update({"versions": versions(), "git_commit": git_commit(), "hardware": hardware(device)})
    t = time.perf_counter()
    ds = open_dataset(data, protocol.doses, protocol.anatomies, ("test",), cache_dir, progress=progress)
    manifest.setdefault("timings", {})["data_s"] = round(time.perf_counter() - t, 2)
    store.write_manifest(manifest)  # only once the inputs are known to be good
    manifest["dataset"] = {"root": str(ds.root), "name": ds.root.name, "config": ds.manifest.get("config")}
    return store, manifest, ds


def saved_checkpoint(name: str, profile: str, ds: LDCTDataset, protocol: Protocol, seed: int,
                     cache_dir: Path | None) -> Path | None:
    """The weights of `name` trained for this dataset, profile, seen doses, anatomies and seed, if any."""
    key = checkpoint_key(profile, ds.root.name, protocol.seen_doses, protocol.anatomies, seed)
    return find_checkpoint(name, key, cache_dir)


def needs_training(name: str, profile: str, ds: LDCTDataset, protocol: Protocol, seed: int, retrain: bool,
                   cache_dir: Path | None) -> bool:
    return get_method(name).learned and (retrain or saved_checkpoint(name, profile, ds, protocol, seed, cache_dir) is None)


def evaluate_cells(store: RunStore, name: str, method: Method, ds: LDCTDataset, cells, *, seed: int, device: str,
                   metrics, batch_size: int = 8, examples: int = 1, save_images: bool = False, progress: bool = True,
                   after_cell=None) -> dict[str, float]:
    """Denoise and score each unfinished (anatomy, dose, seen) cell; the cell file is written last, so a cell
    file means the cell is complete. Returns the seconds spent denoising and scoring."""
    spent = {"denoise_s": 0.0, "score_s": 0.0}
    for anatomy, dose, seen in tqdm(cells, desc=name, unit="cell", disable=not progress):
        if store.has_cell(name, anatomy, dose):
            continue
        pairs = ds.pairs([anatomy], [dose], "test", context=method.context)
        torch.manual_seed(seed)
        t = time.perf_counter()
        pred = torch.cat([method.denoise(pairs.ld[i:i + batch_size].to(device)).float().cpu()
                          for i in range(0, len(pairs), batch_size)])
        spent["denoise_s"] += time.perf_counter() - t
        if not torch.isfinite(pred).all():
            raise RuntimeError(f"{name} produced NaN/inf on {anatomy} at {dose_label(dose)}; its checkpoint may be broken.")
        t = time.perf_counter()
        scores = score_batch(pred, pairs.fd, windows_for(anatomy), tuple(metrics))
        spent["score_s"] += time.perf_counter() - t
        rows = pd.concat([pd.DataFrame({
            "run": store.name, "method": name, "anatomy": anatomy, "dose": dose, "seen": seen,
            "patient": pairs.meta["patient"].to_numpy(), "slice": pairs.meta["slice"].to_numpy(),
            "window": w, "metric": m, "value": v.numpy()}) for (w, m), v in scores.items()], ignore_index=True)
        _save_examples(store, name, anatomy, dose, pairs, pred, examples)
        if save_images:
            store.write_images(name, anatomy, dose, pred[:, 0].numpy(), pairs.meta)
            _save_dicom(store, ds, name, anatomy, dose, pred[:, 0].numpy(), pairs.meta)
        if hasattr(method, "perceive"):  # DA-CLIP's perception, for the embedding plots (cheap)
            store.write_perception(anatomy, dose, _perception(method, pairs, anatomy, dose, seen))
        store.write_cell(name, anatomy, dose, rows)
        if after_cell is not None:
            after_cell()
    return spent


def finish_run(store: RunStore, manifest: dict, t0: float) -> pd.DataFrame:
    table = store.consolidate()
    manifest["timings"]["total_s"] = round(time.perf_counter() - t0, 2)
    manifest["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    manifest["rows"] = int(len(table))
    store.write_manifest(manifest)
    return table


def run_matrix(methods: list[str], protocol: Protocol, out: Path, *, data: str = "embedded", profile: str = "quick",
               device: str = "cpu", seed: int = 0, retrain: bool = False, metrics=DEFAULT_METRICS,
               cache_dir: Path | None = None, batch_size: int = 8, examples: int = 1, save_images: bool = False,
               cli_args: dict | None = None, progress: bool = True, echo=print) -> pd.DataFrame:
    """Run every method on every (anatomy, dose) cell in this process and write the results store at `out`."""
    t0 = time.perf_counter()
    store, manifest, ds = prepare_run(methods, protocol, out, data=data, profile=profile, device=device, seed=seed,
                                      retrain=retrain, metrics=metrics, cache_dir=cache_dir, cli_args=cli_args,
                                      progress=progress)
    timings = manifest["timings"]
    for name in methods:
        cells = protocol.cells()
        if all(store.has_cell(name, a, d) for a, d, _ in cells):
            echo(f"{name}: all {len(cells)} cells already done, skipping")
            continue
        t = time.perf_counter()
        if needs_training(name, profile, ds, protocol, seed, retrain, cache_dir) and data == "embedded":
            # the training splits are simulated only when needed
            open_dataset(data, protocol.seen_doses, protocol.anatomies, ("train", "val"), cache_dir, progress=progress)
        method, info = load_or_train(name, profile, ds, protocol.seen_doses, protocol.anatomies, seed=seed,
                                     device=device, retrain=retrain, cache_dir=cache_dir, progress=progress)
        method.for_inference()
        manifest.setdefault("methods", {})[name] = describe(method, info)
        timings[f"{name}.load_s"] = round(time.perf_counter() - t, 2)
        spent = evaluate_cells(store, name, method, ds, cells, seed=seed, device=device, metrics=metrics,
                               batch_size=batch_size, examples=examples, save_images=save_images, progress=progress)
        timings.update({f"{name}.{k}": round(v, 2) for k, v in spent.items()})
        store.write_manifest(manifest)
    return finish_run(store, manifest, t0)


def describe(method: Method, info: dict) -> dict:
    return {**info, "parameters": method.n_parameters(), "description": method.description,
            "config": method.config.to_dict() if method.learned else {}}


def _save_examples(store: RunStore, name: str, anatomy: str, dose: float, pairs, pred: torch.Tensor, n: int) -> None:
    """The middle slice of the first `n` test patients: prediction, and (once per cell) the input and target."""
    picks = []
    for patient in pairs.meta["patient"].unique()[:n]:
        rows = np.flatnonzero(pairs.meta["patient"].to_numpy() == patient)
        picks.append(rows[len(rows) // 2])
    store.write_examples(name, anatomy, dose, {"pred": pred[picks, 0].numpy()})
    if store.examples("_input", anatomy, dose) is None:
        store.write_examples("_input", anatomy, dose, {"ld": centre_slice(pairs.ld[picks])[:, 0].numpy(),
                                                       "fd": pairs.fd[picks, 0].numpy()})


def _save_dicom(store: RunStore, ds: LDCTDataset, name: str, anatomy: str, dose: float, images: np.ndarray,
                meta: pd.DataFrame) -> None:
    """When the test slices came from DICOM: one derived series per patient, headers copied from the sources."""
    from .data.dicom_export import write_series
    from .data.simulate import dose_key

    for patient in meta["patient"].unique():
        rows = np.flatnonzero(meta["patient"].to_numpy() == patient)
        sources = ds.source_files(anatomy, patient, dose_key(dose))
        if sources is None:
            return  # simulated phantoms have no DICOM to copy
        write_series(images[rows], [sources[i] for i in meta["slice"].to_numpy()[rows]],
                     store.images_dir(name, anatomy, dose) / str(patient),
                     f"ldct-bench {name} denoised ({dose_label(dose)} dose)")


def _perception(method, pairs, anatomy, dose, seen) -> pd.DataFrame:
    out = method.perceive(centre_slice(pairs.ld))
    return pd.DataFrame({"anatomy": anatomy, "dose": dose, "seen": seen, "patient": pairs.meta["patient"].to_numpy(),
                         "slice": pairs.meta["slice"].to_numpy(), "dose_score": out["dose_score"].cpu().numpy(),
                         "estimated_dose": out["estimated_dose"].cpu().numpy(),
                         "estimated_anatomy": [ANATOMIES[i] for i in out["estimated_anatomy"].cpu().numpy()],
                         **{f"dose_emb_{i}": out["dose"][:, i].cpu().numpy() for i in range(out["dose"].shape[1])}})


def leaderboard_text(table: pd.DataFrame, window: str = "founddiff") -> str:
    """A compact terminal leaderboard: mean PSNR / SSIM per method and dose (all anatomies), seen doses marked."""
    sub = table[table["window"] == window]
    if sub.empty:
        return "(no rows)"
    piv = sub.pivot_table(index="method", columns=["metric", "dose"], values="value", aggfunc="mean")
    seen = sub.groupby("dose")["seen"].first()
    lines = [f"window: {window}  (* = dose seen in training)"]
    for metric, fmt in (("psnr", "{:7.2f}"), ("ssim", "{:7.4f}"), ("rmse", "{:7.1f}")):
        if metric not in piv.columns.get_level_values(0):
            continue
        cols = piv[metric]
        head = f"{metric.upper():10s}" + "".join(f"{dose_label(d) + ('*' if seen[d] else ''):>9s}" for d in cols.columns)
        lines.append(head)
        for m in cols.index:
            lines.append(f"  {m:8s}" + "".join(f"  {fmt.format(v)}" for v in cols.loc[m]))
    return "\n".join(lines)
