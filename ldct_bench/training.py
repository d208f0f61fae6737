"""The training harness every learned method goes through: same data, same sampling, same budget.

A `Trainer` samples random patches (with flips) from the seen doses and anatomies, each with
a loss weight that balances the (anatomy, dose) cells (`cell_weights`), calls the method's
`train_step`, validates PSNR on whole validation slices, checkpoints with everything needed
to resume (weights, optimisers, RNG states, step), writes a CSV log and a manifest, and
honours iteration and wall-time budgets. Methods with several stages (FoundDiff: DA-CLIP,
then DA-Diff) run them in order, each resumable. Under torchrun the same loop trains
data-parallel (see distributed.py).
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import distributed
from .atomic import atomic_path, atomic_write_json
from .checkpoints import TrainJob, training_dir
from .data.dataset import LDCTDataset, Pairs, intact, sha256_file
from .environment import hardware
from .methods import Method, get_method
from .metrics import WINDOWS, score_batch
from .toolkit import ANATOMY_INDEX, centre_slice


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

    def sample(self, batch: int | None = None) -> dict:
        """`batch` (default: the sampler's) random patches, with their whole slices and labels."""
        n, (h, w), p, batch = len(self.dose), self.ld.shape[-2:], self.patch, batch or self.batch
        idx = self.rng.integers(0, n, batch)
        ys, xs = self.rng.integers(0, h - p + 1, batch), self.rng.integers(0, w - p + 1, batch)
        flips = self.rng.integers(0, 2, (batch, 2))
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


@dataclass
class Progress:
    """Where a training stands, as its checkpoint records it: the next stage, its next step, the time spent, the
    log, the stages that stopped on a validation plateau and each stage's FLOPs per step."""

    stage_index: int = 0
    step: int = 0
    elapsed_s: float = 0.0
    log: list = field(default_factory=list)
    plateaued: list = field(default_factory=list)
    flops_per_step: dict = field(default_factory=dict)


PLATEAU_VALIDATIONS = 3  # the fewest validations a plateau is judged over


def plateau_gain(curve: list[tuple[int, float]], step: int, val_every: int) -> float | None:
    """How much the best validation PSNR of `curve` [(step, psnr)] rose over the last fifth of `step` steps, or over
    its last PLATEAU_VALIDATIONS validations where they reach further back (None while no validation lies before
    that window, or fewer than two in it). One noisy validation is no plateau: it stopped RED-CNN at 2 500 steps on
    the clinical phantoms (43.60 dB, where the realistic ones' curve climbed on to 46.6); nor are two: a fifth of
    3 000 steps held two validations below an earlier best on clinical2 (45.60 and 45.75 after 45.82), with the
    curve 0.19 dB up over its last 1 500 steps, where the clinical one kept climbing for 1.1 dB more."""
    start = min(0.8 * step, step - PLATEAU_VALIDATIONS * val_every)
    before = [v for s, v in curve if s <= start]
    after = [v for s, v in curve if start < s <= step]
    if not before or len(after) < 2:
        return None
    return max(after) - max(before)


def count_flops(fn) -> int:
    """FLOPs of one call of `fn`, forward and backward, by torch's own formulas (matrix products, convolutions,
    attention; element-wise work is not counted). FlopCounterMode itself cannot be used: its per-module hooks
    break autograd.grad, which WGAN's gradient penalty calls."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Counter(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                self.total += formula(*args, **kwargs, out_val=out)
            return out

    with Counter() as counter:
        fn()
    return int(counter.total)


class Trainer:
    """Trains one method for one TrainJob into `out_dir`, in named steps: `restore` the last checkpoint, `run_stage`
    for each stage (which `validate`s and `checkpoint`s as it goes), then `write_manifest`. `fit` does all of it."""

    def __init__(self, method: Method, dataset: LDCTDataset, job: TrainJob, out_dir: Path, *,
                 time_budget_s: float | None = None, val_slices: int = 4, progress: bool = True):
        self.method, self.job, self.out_dir = method, job, Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.time_budget_s = time_budget_s
        self.identity = json.loads(json.dumps(job.identity(method)))  # as it will read back (tuples become lists)
        self.world = distributed.world(str(method.device))
        self.show_progress = progress and self.world.main
        torch.manual_seed(job.seed + self.world.rank)  # each rank its own noise; the patch sampler's seed stays shared
        self.train_pairs = dataset.pairs(job.anatomies, job.doses, "train", context=method.context)
        has_val = all(dataset.patients(a, "val") for a in job.anatomies)
        self.val_pairs = dataset.pairs(job.anatomies, job.doses, "val", context=method.context,
                                       max_slices=val_slices) if has_val else None
        cfg = method.config
        self.sampler = PatchSampler(self.train_pairs, cfg.patch_size, cfg.batch_size, job.seed, cfg.balance_cells)
        self.domain = dataset.domain()  # what the model sees of acquisition (pixel sizes, kernels): in its manifest
        self.progress = Progress()
        self.resumed_stage: int | None = None  # the stage whose optimiser state came from disk (no fresh setup)
        self.input_psnr = float("nan")
        self.t_start = time.perf_counter()

    @property
    def state_path(self) -> Path:
        return self.out_dir / STATE_FILE

    def fit(self, resume: bool = True) -> dict:
        """Train every stage not yet done (within the time budget); returns the manifest written to out_dir."""
        if resume:
            self.restore()
        self.t_start = time.perf_counter() - self.progress.elapsed_s  # the training's own clock, across resumes
        self.t_invoked = time.perf_counter()  # the time budget counts from here: each resume gets its own
        self.method.train(True)
        if self.val_pairs is not None and self.world.main:
            self.input_psnr = validation_psnr(None, self.val_pairs)
        complete = all(self.run_stage(i) for i in range(self.progress.stage_index, len(self.method.stages)))
        return self.write_manifest(complete)

    def restore(self) -> None:
        """Continue from this job's checkpoint in out_dir, if there is one; a checkpoint of another job is refused."""
        if not self.state_path.is_file():
            return
        saved = read_state(self.out_dir)
        old = json.loads(saved["identity"])
        if old != self.identity:
            diff = sorted(k for k in set(old) | set(self.identity) if old.get(k) != self.identity.get(k))
            raise ValueError(f"cannot resume {self.out_dir}: its training was started with a different "
                             f"{', '.join(diff)}; delete that folder (or pass --retrain) to start over.")
        self.method.load_state_dict(saved["weights"], source=f"training state {self.state_path}")
        self.progress = Progress(**json.loads(saved["progress"]))
        stage_index, step = self.progress.stage_index, self.progress.step
        if stage_index < len(self.method.stages) and step > 0:  # mid-stage: restore its optimiser
            self.method.setup_training(self.method.stages[stage_index])
            self.method.load_training_state(saved["training"])
            self.resumed_stage = stage_index
        self.sampler.load_state(json.loads(saved["sampler"]))
        torch.set_rng_state(saved["torch_rng"])
        if self.world.rank:  # rank 0's saved generator, moved on per rank
            torch.manual_seed(self.job.seed + self.world.rank + 7919 * step)

    def run_stage(self, index: int) -> bool:
        """Train stage `index` to its iteration budget; False when the time budget stopped it first."""
        method, stage = self.method, self.method.stages[index]
        iters, size = method.config.stage_iterations(stage), method.config.stage_batch_size(stage)
        start = self.progress.step if index == self.progress.stage_index else 0
        if index != self.resumed_stage:
            method.setup_training(stage)
        bar = tqdm(range(start, iters), desc=f"{method.name}:{stage}", unit="it", disable=not self.show_progress,
                   initial=start, total=iters)
        with distributed.data_parallel(method, stage, self.world):
            for step in bar:
                batch = distributed.shard({k: v.to(method.device) for k, v in self.sampler.sample(size).items()},
                                          self.world)
                losses = self.train_step(batch, step, stage)
                if (step + 1) % method.config.val_every == 0 or step + 1 == iters:
                    row = self.validate(stage, step + 1, losses)
                    bar.set_postfix({k: v for k, v in row.items() if k in ("loss", "val_psnr")})
                    if step + 1 < iters and self.plateaued(stage, step + 1):
                        self.progress.plateaued.append(stage)
                        break
                    self.checkpoint(index, step + 1)
                if self.out_of_time():
                    self.checkpoint(index, step + 1)
                    return False
        method.finish_stage(stage, self.train_pairs)
        self.checkpoint(index + 1, 0)
        return True

    def train_step(self, batch: dict, step: int, stage: str) -> dict:
        """The method's step; the first of each stage in this process also counts its FLOPs (for the manifest)."""
        if stage in self.progress.flops_per_step:
            return self.method.train_step(batch, step, stage)
        losses = {}
        flops = count_flops(lambda: losses.update(self.method.train_step(batch, step, stage)))
        self.progress.flops_per_step[stage] = flops * self.world.size  # every rank did its share of the batch
        return losses

    def plateaued(self, stage: str, step: int) -> bool:
        """The stage's best validation PSNR rose by less than `plateau_db` over its last fifth or its last
        PLATEAU_VALIDATIONS validations, whichever is longer (plateau_gain), judged from the fifth validation on
        (rank 0 decides)."""
        cfg = self.method.config
        curve = [(r["step"], r["val_psnr"]) for r in self.progress.log if r["stage"] == stage and "val_psnr" in r]
        gain = plateau_gain(curve, step, cfg.val_every) if cfg.plateau_db > 0 and step >= 5 * cfg.val_every else None
        return distributed.agree(gain is not None and gain < cfg.plateau_db, self.world)

    def validate(self, stage: str, step: int, losses: dict) -> dict:
        """Log the step's losses with validation PSNR beside the input's (rank 0, where the method validates)."""
        row = {"stage": stage, "step": step, "elapsed_s": round(time.perf_counter() - self.t_start, 2),
               **{k: round(float(v), 6) for k, v in losses.items()}}
        if self.val_pairs is not None and self.world.main and self.method.validates(stage):
            row["val_psnr"] = round(validation_psnr(self.method, self.val_pairs), 4)
            row["val_psnr_ldct"] = round(self.input_psnr, 4)
        self.progress.log.append(row)
        return row

    def out_of_time(self) -> bool:
        """Past the time budget of this call (not of the training so far: a resume with --time-budget T trains T
        seconds more), as rank 0 sees it (every rank must stop at the same step)."""
        if self.time_budget_s is None:
            return False
        return distributed.agree(time.perf_counter() - self.t_invoked > self.time_budget_s, self.world)

    def checkpoint(self, stage_index: int, step: int) -> None:
        """Everything needed to resume at (stage_index, step). Rank 0 writes; every rank leaves once it is on disk."""
        if self.world.main:
            progress = Progress(stage_index, step, time.perf_counter() - self.t_start, self.progress.log,
                                self.progress.plateaued, self.progress.flops_per_step)
            payload = {"identity": json.dumps(self.identity), "weights": self.method.state_dict(),
                       "training": self.method.training_state(), "sampler": json.dumps(self.sampler.state()),
                       "torch_rng": torch.get_rng_state(), "progress": json.dumps(asdict(progress))}
            with atomic_path(self.state_path) as tmp:
                torch.save(payload, tmp)
                # its sha256 beside it before it replaces the old state, with the old one's: a kill between the two
                # renames leaves a state the record still vouches for
                recorded = _state_digests(self.out_dir)[:1] if self.state_path.is_file() else []
                atomic_write_json(self.out_dir / STATE_RECORD, {"sha256": [sha256_file(tmp), *recorded]})
        distributed.barrier(self.world)

    def write_manifest(self, complete: bool) -> dict:
        """The job, its budget and what it used (steps, patches, FLOPs, wall time, hardware), the validation curve
        and whether each validated stage reached a plateau; with the weights when training is complete."""
        method, log = self.method, self.progress.log
        manifest = {
            **self.identity, "complete": complete, "wall_time_s": round(time.perf_counter() - self.t_start, 1),
            "iterations": {s: method.config.stage_iterations(s) for s in method.stages},
            **self.budget(), "parameters": method.n_parameters(), "hardware": hardware(str(method.device)),
            "final": log[-1] if log else {}, "val_psnr_ldct": self.input_psnr, "processes": self.world.size,
            "validation_curve": [[r["stage"], r["step"], r["val_psnr"]] for r in log if "val_psnr" in r],
            "plateaued": {s: s in self.progress.plateaued for s in method.stages if method.validates(s)},
            "domain": self.domain,
        }
        if self.world.main:  # rank 0 writes the log, weights and manifest
            _write_log(self.out_dir / "train_log.csv", log)
            if complete:
                method.save(self.out_dir / "weights.safetensors", extra={"data": self.job.data, "profile": self.job.profile})
                manifest["weights"] = "weights.safetensors"
                manifest["sha256"] = sha256_file(self.out_dir / "weights.safetensors")
            atomic_write_json(self.out_dir / "manifest.json", manifest)
        distributed.barrier(self.world)
        return manifest


    def budget(self) -> dict:
        """Steps, patches and training FLOPs (each stage's first step counted, times its steps) per stage."""
        steps = {s: max([r["step"] for r in self.progress.log if r["stage"] == s], default=0) for s in self.method.stages}
        patches = {s: n * self.method.config.stage_batch_size(s) for s, n in steps.items()}
        flops = sum(self.progress.flops_per_step.get(s, 0) * n for s, n in steps.items())
        return {"steps": steps, "patches_seen": patches, "training_flops": flops,
                "flops_per_step": {s: self.progress.flops_per_step.get(s, 0) for s in self.method.stages}}


STATE_FILE, STATE_RECORD = "state.pt", "state.sha256.json"  # the resume state and the record of its sha256
_STATE_KEYS = {"identity": str, "weights": dict, "training": dict, "sampler": str, "torch_rng": torch.Tensor,
               "progress": str}


def _state_digests(out_dir: Path) -> list[str]:
    try:
        digests = json.loads((Path(out_dir) / STATE_RECORD).read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [d for d in digests if isinstance(d, str)] if isinstance(digests, list) else []


def read_state(out_dir: Path) -> dict:
    """A training's resume state, checked like the weights: its sha256 against the record written with it, then
    read without unpickling code (weights_only) and its parts checked; anything else is one sentence saying how to
    start over."""
    path = Path(out_dir) / STATE_FILE
    fix = f"delete {path} (or pass --retrain) to start that training over"
    digests = _state_digests(out_dir)
    if not digests:
        raise ValueError(f"the training state {path} has no readable record of its sha256 ({STATE_RECORD}), so it "
                         f"cannot be trusted; {fix}.")
    if not any(intact(path, d) for d in digests):
        raise ValueError(f"the training state {path} does not match the sha256 recorded beside it (damaged or "
                         f"replaced); {fix}.")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch each raise their own kinds
        raise ValueError(f"the training state {path} cannot be read ({type(exc).__name__}); {fix}.") from None
    bad = [k for k, kind in _STATE_KEYS.items() if not isinstance(saved, dict) or not isinstance(saved.get(k), kind)]
    if bad:
        raise ValueError(f"the training state {path} lacks {', '.join(bad)}; {fix}.")
    return saved


def forget_state(out_dir: Path) -> None:
    """Start a training over: its resume state and the record of it go."""
    for name in (STATE_FILE, STATE_RECORD):
        (Path(out_dir) / name).unlink(missing_ok=True)


def fit(method: Method, dataset: LDCTDataset, job: TrainJob, out_dir: Path, *, time_budget_s: float | None = None,
        val_slices: int = 4, progress: bool = True, resume: bool = True) -> dict:
    """Train `method` on the seen doses/anatomies of `dataset`; returns the manifest written to out_dir."""
    trainer = Trainer(method, dataset, job, out_dir, time_budget_s=time_budget_s, val_slices=val_slices,
                      progress=progress)
    return trainer.fit(resume)


def train_method(job: TrainJob, dataset: LDCTDataset, *, device: str = "cpu", out: Path | None = None,
                 retrain: bool = False, time_budget: float | None = None, cache_dir: Path | None = None,
                 progress: bool = True) -> dict:
    """Build `job`'s method (profile + overrides, initial weights from the job's seed) and train it into `out`
    (default: the cache's folder for the job); the manifest, with the folder as `dir`."""
    cls = get_method(job.method)
    if not cls.learned:
        raise ValueError(f"method {job.method!r} has nothing to train.")
    torch.manual_seed(job.seed)  # the initial weights are part of what a seed reproduces (and the same on every rank)
    method = cls(cls.configure(job.profile, job.overrides, f"{job.method}'s config"), device)
    out = Path(out) if out else training_dir(job, cache_dir)
    if retrain:
        forget_state(out)
    manifest = fit(method, dataset, job, out, time_budget_s=time_budget, progress=progress, resume=not retrain)
    manifest["dir"] = str(out)
    return manifest


def _write_log(path: Path, rows: list[dict]) -> None:
    first = ["stage", "step", "elapsed_s"]
    keys = first + sorted({k for r in rows for k in r} - set(first))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
