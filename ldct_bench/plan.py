"""A run resolved once, then executed: every question a RunConfig raises about its methods and its data, answered
in one place before anything is written.

A RunConfig says what a run is; its plan says what that means here: each entry's method class, config overrides
and training job (hence its checkpoint key), and the evaluated and training datasets with their names, acquisitions
and pixel sizes. The runner, the fan-out, `run --status`, the evaluation and the manifest read the plan instead of
asking the registry and the data resolver again (they used to, five and four times per entry).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .checkpoints import TrainJob, find_checkpoint
from .config import RunConfig
from .data.resolve import dataset_acquisitions, dataset_name, dataset_pixel_mm
from .methods import Method, get_method
from .protocol import Cell


@dataclass(frozen=True)
class DataPlan:
    """A `--data`/`--train-data` value as the run uses it."""

    spec: str
    name: str  # its cache folder (several joined by '+'): the key of checkpoints trained on it
    acquisitions: tuple[str, ...]
    pixel_mm: float | list | dict | None

    def to_dict(self) -> dict:
        return {"name": self.name, "acquisitions": list(self.acquisitions), "pixel_mm": self.pixel_mm}


def resolve_data(spec: str, config: RunConfig) -> DataPlan:
    return DataPlan(spec, dataset_name(spec, config.cache_dir, config.phantoms),
                    tuple(dataset_acquisitions(spec, config.cache_dir, config.phantoms)),
                    dataset_pixel_mm(spec, config.cache_dir, config.phantoms))


@dataclass(frozen=True)
class EntryPlan:
    """One labelled set of rows (config.Entry) with its method resolved: the class, the overrides inference applies
    and, for a learned method, the training job its checkpoint is found or made by."""

    label: str
    method: str
    cls: type[Method]
    seen_doses: tuple[float, ...]
    cells: tuple[Cell, ...]
    overrides: dict
    job: TrainJob | None  # None: the method learns nothing
    profile: str = "quick"  # the config profile the overrides go on top of

    @property
    def learned(self) -> bool:
        return self.job is not None


@dataclass(frozen=True)
class RunPlan:
    config: RunConfig
    test: DataPlan
    train: DataPlan
    entries: tuple[EntryPlan, ...]

    def entry(self, label: str) -> EntryPlan:
        return next(e for e in self.entries if e.label == label)

    def data_flags(self) -> dict:
        """What every result row of the run says of its data, along the dataset and acquisition axes."""
        acquisition = self.test.acquisitions[0]
        return {"seen_data": self.config.seen_data, "acquisition": acquisition,
                "seen_acquisition": acquisition in self.train.acquisitions}

    def checkpoint(self, label: str) -> Path | None:
        """The saved weights of `label`'s job, committed or cached (None: none yet, or nothing to learn)."""
        entry = self.entry(label)
        return find_checkpoint(entry.job, self.config.cache_dir) if entry.learned else None


def resolve(config: RunConfig) -> RunPlan:
    """The plan of `config`: each method looked up once, each dataset spec resolved once (one sentence, before
    anything is written, where a spec names nothing)."""
    test = resolve_data(config.data, config)
    train = test if config.trained_on == config.data else resolve_data(config.trained_on, config)
    entries = []
    for e in config.entries():
        cls = get_method(e.method)
        overrides = config.overrides_for(e.method)
        training, _ = cls.Config.split_overrides(overrides)
        job = TrainJob(e.method, config.profile, tuple(e.seen_doses), tuple(config.protocol.trained_anatomies),
                       train.name, config.seed, training) if cls.learned else None
        entries.append(EntryPlan(e.label, e.method, cls, tuple(e.seen_doses), tuple(e.cells), overrides, job,
                                 config.profile))
    return RunPlan(config, test, train, tuple(entries))
