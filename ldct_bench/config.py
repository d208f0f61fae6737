"""One run, described once: the frozen `RunConfig` the CLI (or Python) builds and passes whole to the in-process
runner and to the fan-out, and the `--set METHOD.FIELD=VALUE` overrides it carries. What it means here (method
classes, training jobs, datasets) is resolved once into a plan (plan.py), which the runner executes.

    from ldct_bench.config import RunConfig, parse_overrides
    from ldct_bench.protocol import Protocol
    from ldct_bench.runner import run_matrix

    config = RunConfig(methods=("ldct", "redcnn"), out=Path("results/runs/mine"),
                       protocol=Protocol(doses=(0.05, 0.1, 0.25), seen_doses=(0.1,)),
                       overrides=parse_overrides(["redcnn.iterations=500"], ("ldct", "redcnn")))
    table = run_matrix(config)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from .conventions import specialist_label
from .data.dataset import SPLITS, PhantomConfig
from .data.resolve import data_family, open_dataset, training_spec
from .methods import get_method
from .metrics import DEFAULT_METRICS, get_metric
from .protocol import Cell, Protocol

PROFILES = ("quick", "paper")


class Override(NamedTuple):
    """One config field of one method set on top of its profile (`--set METHOD.FIELD=VALUE`)."""

    method: str
    field: str
    value: Any


def parse_overrides(texts, methods) -> tuple[Override, ...]:
    """`--set` values ('redcnn.iterations=500') -> Overrides of `methods`, each value read as its field's type."""
    out = []
    for text in texts:
        target, eq, value = str(text).partition("=")
        name, dot, field_name = target.strip().partition(".")
        if not (eq and dot and name and field_name):
            raise ValueError(f"--set {text!r}: write METHOD.FIELD=VALUE, e.g. --set redcnn.iterations=500.")
        out.append(Override(name, field_name, value.strip()))
    return tuple(_checked(o, methods) for o in out)


def _checked(o: Override, methods) -> Override:
    """`o` with its value as its field's type; one sentence naming the --set when the method, field or type is wrong."""
    where = f"--set {o.method}.{o.field}={o.value}"
    if o.method not in methods:
        raise ValueError(f"{where}: {o.method!r} is not one of this command's methods ({', '.join(methods)}).")
    cls = get_method(o.method)
    try:
        return Override(o.method, o.field, cls.Config.coerce(o.field, o.value))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


class Entry(NamedTuple):
    """One labelled set of rows of a run: a method trained on `seen_doses` and scored on `cells`. A generalist
    (labelled by its method) is trained on the protocol's seen doses and scored on every cell; an `--oracle`
    specialist ('redcnn@5%') is trained on one unseen dose alone and scored only there, where it is the yardstick
    of the generalist's generalization gap."""

    label: str
    method: str
    seen_doses: tuple[float, ...]
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class RunConfig:
    """Everything a run of the matrix is, validated when built (a bad value is one clear error, before anything
    is written). The fields down to `overrides` decide the numbers and must match to resume into a run folder;
    the rest say where and how the run computes."""

    methods: tuple[str, ...]  # registered method names, in the order they run
    out: Path  # the run folder (the results store)
    protocol: Protocol = field(default_factory=Protocol)  # doses, seen doses, anatomies (evaluated and trained)
    data: str = "embedded"  # 'embedded', an imported dataset's name, or a dataset folder: what is evaluated
    train_data: str | None = None  # what the methods are trained on (None: `data`, on its training split)
    profile: str = "quick"  # every method's config profile: 'quick' (CPU budgets) or 'paper'
    seed: int = 0  # initial weights, training samples, sampling noise
    metrics: tuple[str, ...] = DEFAULT_METRICS
    retrain: bool = False  # train every learned method anew instead of using saved checkpoints
    overrides: tuple[Override, ...] = ()  # config fields set on top of the profile (parse_overrides)
    oracle: bool = False  # also train a specialist of each learned method on each unseen dose alone
    resample: bool = False  # run each method at its training pixel size where a patient's pixels lie outside it
    phantoms: PhantomConfig = field(default_factory=PhantomConfig)  # what 'embedded' simulates
    device: str = "cpu"  # cpu or cuda[:N]
    cache_dir: Path | None = None  # datasets and trained checkpoints (default $LDCT_BENCH_CACHE)
    batch_size: int = 8  # slices per denoise call
    examples: int = 1  # patients per cell whose middle slice is kept for figures
    save_images: bool = False  # also keep every denoised slice (DICOM when the input was)
    iq: bool = False  # also score task-based image quality on the image-quality phantom (iq.py)
    iq_realisations: int = 100  # phantom scans per class (signal present, absent) at each dose
    rescore: tuple[str, ...] = ()  # methods whose scores in --out are made again (with their oracle specialists)

    def __post_init__(self):
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "metrics", tuple(self.metrics))
        object.__setattr__(self, "rescore", tuple(self.rescore))
        object.__setattr__(self, "out", Path(self.out))
        if not self.methods:
            raise ValueError("no methods given; write e.g. --methods ldct,redcnn or --methods all.")
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; choose from {', '.join(PROFILES)}.")
        if self.iq and self.iq_realisations < 8:
            raise ValueError(f"--iq-realisations {self.iq_realisations}: an observer needs at least 8 per class.")
        for name in self.methods:
            get_method(name)
        if (alien := [m for m in self.rescore if m not in self.methods]):
            raise ValueError(f"--rescore {','.join(alien)}: not among this run's --methods "
                             f"({','.join(self.methods)}); name methods the run scores.")
        for metric in self.metrics:
            get_metric(metric)
        object.__setattr__(self, "overrides", tuple(_checked(Override(*o), self.methods) for o in self.overrides))
        for name in {o.method for o in self.overrides}:  # together, the fields must still build a bounded network
            get_method(name).configure(self.profile, self.overrides_for(name), f"--set {name}.*")

    def identity(self) -> dict:
        """The manifest's `config`: what decides the numbers (a run folder refuses a run with another identity)."""
        return json.loads(json.dumps({
            "methods": list(self.methods), "protocol": self.protocol.to_dict(), "data": self.data,
            "train_data": self.trained_on,
            "profile": self.profile, "seed": self.seed, "metrics": list(self.metrics), "retrain": self.retrain,
            "oracle": self.oracle, "resample": self.resample,
            "overrides": {m: self.overrides_for(m) for m in self.methods if self.overrides_for(m)},
            **({} if self.phantoms.anatomy_model == "ellipses" else {"phantoms": self.phantoms.anatomy_model})}))

    @property
    def trained_on(self) -> str:
        """What the methods train on: --train-data, else --data; plain 'embedded' is every acquisition profile (unless
        the phantoms have a scanner of their own)."""
        return training_spec(self.train_data or self.data, self.phantoms)

    @property
    def seen_data(self) -> bool:
        """Whether the evaluated data is the training data (its held-out test split) or another dataset; the embedded
        phantoms through another acquisition are the same data (the same patients, scanned otherwise)."""
        return data_family(self.trained_on) == data_family(self.data)

    @property
    def eval_splits(self) -> tuple[str, ...]:
        """The test split of the training data; every patient of a dataset used only for evaluation."""
        return ("test",) if self.seen_data else SPLITS

    def entries(self) -> list[Entry]:
        """What the run fills: each method as a generalist, then (with `oracle`) each learned method's specialist
        for each unseen dose."""
        cells = tuple(self.protocol.cells())
        out = [Entry(m, m, tuple(self.protocol.seen_doses), cells) for m in self.methods]
        if self.oracle:
            unseen = [d for d in self.protocol.doses if not self.protocol.is_seen(d)]
            out += [Entry(specialist_label(m, d), m, (d,), tuple(c._replace(seen_dose=True) for c in cells if c.dose == d))
                    for m in self.methods if get_method(m).learned for d in unseen]
        return out

    def overrides_for(self, method: str) -> dict:
        return {o.field: o.value for o in self.overrides if o.method == method}

    def dataset(self, doses=None, anatomies=None, progress: bool = True):
        """The evaluated data's patients (eval_splits) at `doses` (simulated first where the embedded cache lacks
        them); default: the protocol's doses and anatomies."""
        return open_dataset(self.data, doses or self.protocol.doses, anatomies or self.protocol.anatomies,
                            self.eval_splits, cache_dir=self.cache_dir, phantoms=self.phantoms, progress=progress)

    def train_dataset(self, progress: bool = True, doses=None):
        """The training data's train and validation splits at the seen doses (or `doses`) and trained anatomies."""
        return open_dataset(self.trained_on, doses or self.protocol.seen_doses, self.protocol.trained_anatomies,
                            ("train", "val"), cache_dir=self.cache_dir, phantoms=self.phantoms, progress=progress)


def upgrade_identity(old: dict) -> dict:
    """The manifest config of a run made by an older version, in today's terms (it trained on the data it
    evaluated, on every evaluated anatomy, with no overrides, and never resampled)."""
    protocol = old.get("protocol", {})
    return {"overrides": {}, "train_data": old.get("data"), "oracle": False, "resample": False, **old,
            "protocol": {"train_anatomies": protocol.get("anatomies"), **protocol}}
