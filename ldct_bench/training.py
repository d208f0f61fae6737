"""The training harness every learned method goes through: same data, same sampling, same budget.

`fit` samples random patches (with flips) from the seen doses and anatomies, each with a
loss weight that balances the (anatomy, dose) cells (`cell_weights`), calls the method's
`train_step`, validates PSNR on whole validation slices, checkpoints with everything
needed to resume (weights, optimisers, RNG states, step), writes a CSV log and a
manifest, and honours iteration and wall-time budgets. Methods with several
stages (FoundDiff: DA-CLIP, then DA-Diff) run them in order, each resumable. Under
torchrun the same loop trains data-parallel (see distributed.py).
"""

from __future__ import annotations

import copy
import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .atomic import atomic_path, atomic_write_json
from . import distributed
from .data.dataset import LDCTDataset, Pairs, sha256_file
from .environment import hardware
from .metrics import WINDOWS, score_batch
from .methods import Method


def exponential_decay(optimizer: torch.optim.Optimizer, config) -> torch.optim.lr_scheduler.ExponentialLR:
    """Per-step exponential decay of the learning rate from `config.lr` to `config.lr_final` over
    `config.iterations` steps (RED-CNN's schedule; the quick WGAN's too)."""
    gamma = (config.lr_final / config.lr) ** (1 / max(1, config.iterations))
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)


class EMA:
    """Exponential moving average of a module's weights (used for inference when enabled)."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(module).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        for s, p in zip(self.shadow.parameters(), module.parameters()):
            s.lerp_(p.detach(), 1 - self.decay)
        for s, b in zip(self.shadow.buffers(), module.buffers()):
            s.copy_(b)


ANATOMY_INDEX = {"head": 0, "chest": 1, "abdomen": 2}


def cell_weights(pairs: Pairs) -> torch.Tensor:
    """Per-slice loss weight 1 / (its cell's mean input error), normalised to mean 1.

    A generalist sees several doses and anatomies at once, whose input errors differ twentyfold
    (chest 50 % against abdomen 10 %). Plain MSE lets the noisiest cells dominate, and the model
    then over-smooths the cleanest ones below their own input. Weighting each (anatomy, dose)
    cell by its input error balances them; with one cell it is the constant 1, plain MSE.
    """
    mse = ((centre_slice(pairs.ld) - pairs.fd).double() ** 2).mean(dim=(1, 2, 3))
    keys = [pairs.meta["anatomy"].to_numpy(), pairs.meta["dose"].to_numpy()]
    cell = pd.Series(mse.numpy()).groupby(keys, dropna=False)
    per_cell = torch.tensor(cell.transform("mean").to_numpy())
    w = 1.0 / per_cell.clamp_min(0.01 * float(per_cell.max()))  # a noiseless (100 %) cell does not take it all
    return (w / w.mean()).float()


class PatchSampler:
    """Random (optionally flipped) patches from in-memory pairs, with dose and anatomy labels and
    cell-balancing loss weights (see `cell_weights`)."""

    def __init__(self, pairs: Pairs, patch: int, batch: int, seed: int, balance_cells: bool = True):
        self.ld, self.fd = pairs.ld, pairs.fd
        self.dose = torch.tensor(pairs.meta["dose"].to_numpy(), dtype=torch.float32)
        self.anatomy = torch.tensor([ANATOMY_INDEX.get(a, -1) for a in pairs.meta["anatomy"]], dtype=torch.long)
        self.weight = cell_weights(pairs) if balance_cells else torch.ones(len(self.dose))
        h, w = self.ld.shape[-2:]
        self.patch = min(patch, h, w) if patch > 0 else min(h, w)
        self.batch = batch
        self.rng = np.random.default_rng(seed)

    def sample(self) -> dict:
        n, (h, w), p = len(self.dose), self.ld.shape[-2:], self.patch
        idx = self.rng.integers(0, n, self.batch)
        ys, xs = self.rng.integers(0, h - p + 1, self.batch), self.rng.integers(0, w - p + 1, self.batch)
        flips = self.rng.integers(0, 2, (self.batch, 2))
        ld, fd = [], []
        for i, y, x, (fh, fv) in zip(idx, ys, xs, flips):
            a, b = self.ld[i, :, y:y + p, x:x + p], self.fd[i, :, y:y + p, x:x + p]
            dims = [d for d, f in ((-1, fh), (-2, fv)) if f]
            if dims:
                a, b = a.flip(dims), b.flip(dims)
            ld.append(a)
            fd.append(b)
        t = torch.from_numpy(idx)
        # whole slices too: methods that perceive global properties (FoundDiff's DA-CLIP) need them
        return {"ld": torch.stack(ld), "fd": torch.stack(fd), "dose": self.dose[t], "anatomy": self.anatomy[t],
                "weight": self.weight[t], "slice": centre_slice(self.ld[t]), "slice_fd": self.fd[t]}

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def load_state(self, s: dict) -> None:
        self.rng.bit_generator.state = s


@dataclass
class TrainJob:
    """What a training run is: its identity decides whether a checkpoint can be resumed."""

    method: str
    profile: str
    doses: tuple[float, ...]
    anatomies: tuple[str, ...]
    data: str  # dataset directory name (carries the data config hash)
    seed: int = 0

    def identity(self, method: Method) -> dict:
        return {"method": self.method, "profile": self.profile, "doses": [float(d) for d in self.doses],
                "anatomies": list(self.anatomies), "data": self.data, "seed": self.seed,
                "config": method.config.to_dict()}


def centre_slice(ld_hu: torch.Tensor) -> torch.Tensor:
    """The slice being denoised, out of (N, 1 + 2k, H, W) context stacks."""
    c = ld_hu.shape[1] // 2
    return ld_hu[:, c:c + 1]


def validation_psnr(method: Method | None, pairs: Pairs, batch: int = 4) -> float:
    """Mean PSNR over validation slices in the FoundDiff scoring window ([-1000, 2000] HU).

    method=None scores the low-dose input itself: the floor a method must beat.
    """
    scores = []
    if method is not None:
        method.train(False)
    with torch.inference_mode():
        for i in range(0, len(pairs), batch):
            ld = pairs.ld[i:i + batch]
            pred = centre_slice(ld) if method is None else method.denoise(ld.to(method.device)).cpu()
            s = score_batch(pred, pairs.fd[i:i + batch], [WINDOWS["founddiff"]], metrics=("psnr",))
            scores.append(s[("founddiff", "psnr")])
    if method is not None:
        method.train(True)
    return float(torch.cat(scores).mean())


def fit(method: Method, dataset: LDCTDataset, job: TrainJob, out_dir: Path, *, time_budget_s: float | None = None,
        val_slices: int = 4, progress: bool = True, resume: bool = True) -> dict:
    """Train `method` on the seen doses/anatomies of `dataset`; returns the manifest written to out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path, log_path = out_dir / "state.pt", out_dir / "train_log.csv"
    identity = json.loads(json.dumps(job.identity(method)))  # as it will read back (tuples become lists)
    cfg = method.config
    w = distributed.world(str(method.device))
    progress = progress and w.main
    torch.manual_seed(job.seed + w.rank)  # each rank its own noise; the patch sampler's seed stays shared
    train_pairs = dataset.pairs(job.anatomies, job.doses, "train", context=method.context)
    has_val = all(dataset.patients(a, "val") for a in job.anatomies)
    val_pairs = dataset.pairs(job.anatomies, job.doses, "val", context=method.context, max_slices=val_slices) if has_val else None
    sampler = PatchSampler(train_pairs, cfg.patch_size, cfg.batch_size, job.seed, cfg.balance_cells)

    done = {"stage_index": 0, "step": 0, "elapsed_s": 0.0, "log": []}
    resumed_stage = None  # the stage whose optimiser state was restored from disk (it needs no fresh setup)
    if resume and state_path.is_file():
        saved = torch.load(state_path, map_location="cpu", weights_only=True)
        old = json.loads(saved["identity"])
        if old != identity:
            diff = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
            raise ValueError(f"cannot resume {out_dir}: its training was started with a different {', '.join(diff)}; "
                             "delete that folder (or pass --retrain) to start over.")
        method.load_state_dict(saved["weights"], source=f"training state {state_path}")
        done = json.loads(saved["progress"])
        if done["stage_index"] < len(method.stages) and done["step"] > 0:  # mid-stage: restore its optimiser
            method.setup_training(method.stages[done["stage_index"]])
            method.load_training_state(saved["training"])
            resumed_stage = done["stage_index"]
        sampler.load_state(json.loads(saved["sampler"]))
        torch.set_rng_state(saved["torch_rng"])
        if w.rank:  # rank 0's saved generator, moved on per rank
            torch.manual_seed(job.seed + w.rank + 7919 * done["step"])

    log = done["log"]
    t_start = time.perf_counter() - done["elapsed_s"]
    stopped_early = False
    method.train(True)
    ld_psnr = validation_psnr(None, val_pairs) if val_pairs is not None and w.main else float("nan")

    def save_state(stage_index: int, step: int):
        """Rank 0 writes; every rank leaves only once it is on disk."""
        if not w.main:
            distributed.barrier(w)
            return
        payload = {"identity": json.dumps(identity), "weights": method.state_dict(),
                   "training": method.training_state(), "sampler": json.dumps(sampler.state()),
                   "torch_rng": torch.get_rng_state(),
                   "progress": json.dumps({"stage_index": stage_index, "step": step,
                                           "elapsed_s": time.perf_counter() - t_start, "log": log})}
        with atomic_path(state_path) as tmp:
            torch.save(payload, tmp)
        distributed.barrier(w)

    for si in range(done["stage_index"], len(method.stages)):
        stage = method.stages[si]
        iters = getattr(cfg, f"{stage}_iterations", None) or cfg.iterations
        start = done["step"] if si == done["stage_index"] else 0
        if si != resumed_stage:
            method.setup_training(stage)
        bar = tqdm(range(start, iters), desc=f"{method.name}:{stage}", unit="it", disable=not progress,
                   initial=start, total=iters)
        with distributed.data_parallel(method, stage, w):
            for step in bar:
                batch = distributed.shard({k: v.to(method.device) for k, v in sampler.sample().items()}, w)
                losses = method.train_step(batch, step, stage)
                last = step + 1 == iters
                if (step + 1) % cfg.val_every == 0 or last:
                    row = {"stage": stage, "step": step + 1, "elapsed_s": round(time.perf_counter() - t_start, 2),
                           **{k: round(float(v), 6) for k, v in losses.items()}}
                    if val_pairs is not None and w.main and getattr(method, "validates", lambda s: True)(stage):
                        row["val_psnr"] = round(validation_psnr(method, val_pairs), 4)
                        row["val_psnr_ldct"] = round(ld_psnr, 4)
                    log.append(row)
                    bar.set_postfix({k: v for k, v in row.items() if k in ("loss", "val_psnr")})
                    save_state(si, step + 1)
                out_of_time = time_budget_s is not None and time.perf_counter() - t_start > time_budget_s
                if time_budget_s is not None and distributed.agree(out_of_time, w):
                    save_state(si, step + 1)
                    stopped_early = True
                    break
        if stopped_early:
            break
        method.finish_stage(stage, train_pairs)
        done = {"stage_index": si + 1, "step": 0}
        save_state(si + 1, 0)

    elapsed = time.perf_counter() - t_start
    manifest = {
        **identity, "complete": not stopped_early, "wall_time_s": round(elapsed, 1),
        "iterations": {s: getattr(cfg, f"{s}_iterations", None) or cfg.iterations for s in method.stages},
        "parameters": method.n_parameters(), "hardware": hardware(str(method.device)), "final": log[-1] if log else {},
        "val_psnr_ldct": ld_psnr, "processes": w.size,
    }
    if not w.main:  # rank 0 writes the log, weights and manifest
        distributed.barrier(w)
        return manifest
    _write_log(log_path, log)
    if not stopped_early:
        method.save(out_dir / "weights.safetensors", extra={"data": job.data, "profile": job.profile})
        manifest["weights"] = "weights.safetensors"
        manifest["sha256"] = sha256_file(out_dir / "weights.safetensors")
    atomic_write_json(out_dir / "manifest.json", manifest)
    distributed.barrier(w)
    return manifest


def _write_log(path: Path, rows: list[dict]) -> None:
    first = ["stage", "step", "elapsed_s"]
    keys = first + sorted({k for r in rows for k in r} - set(first))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
