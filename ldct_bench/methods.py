"""The Method API: the protocol every denoiser implements, its config, its checkpoints, and the registry.

A method is a class with a name, a config dataclass (with `quick` and `paper` profiles),
`denoise(ld_hu) -> hu`, and, if it learns, `train_step`. The runner hands it HU and gets
HU back; normalisation is the method's own business. Optional capabilities are declared
here with their defaults (`validates`, `perceive`, `sampling_steps`, `unavailable`,
`Config.stage_iterations`), so nothing else asks a method what it can do by name.

Every method, the built-ins included, registers through one door, the entry-point group
`ldct_bench.methods` of its package:

    [project.entry-points."ldct_bench.methods"]
    mymethod = "mypkg.module:MyMethod"

Methods import from here and from `ldct_bench.toolkit` only.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from .conventions import split_list
from .toolkit import bare

ENTRY_POINT_GROUP = "ldct_bench.methods"
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
# A config (from --set or a checkpoint's header) asking for more parameters than this is refused before any network
# is built: 2 GB of float32 weights, 7x FoundDiff's paper profile (70 M), the largest registered network.
MAX_PARAMETERS = 500_000_000


class Range(NamedTuple):
    """The values a numeric config field (or each item of a tuple field) may take: low <= v <= high, with either
    end excluded where open. NaN and infinities lie outside every range."""

    low: float
    high: float
    open_low: bool = False
    open_high: bool = False

    def holds(self, value) -> bool:
        v = float(value)
        return (self.low < v if self.open_low else self.low <= v) and (v < self.high if self.open_high else v <= self.high)

    def __str__(self) -> str:
        return f"{'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"


@dataclass
class Settings:
    """A method's settings as one dataclass: named profiles, declared ranges and the checks every value read from
    outside (--set, a checkpoint's header) goes through. Methods that learn nothing subclass it directly; learned
    ones subclass MethodConfig, which adds the training fields."""

    PROFILES: ClassVar[dict[str, dict]] = {"quick": {}, "paper": {}}
    # What each field may hold: a Range for a number (each item of a tuple), or the allowed words of a text field.
    # A subclass declares its own fields' here; `ranges()` gathers every class's. Every numeric field has one.
    RANGES: ClassVar[dict[str, Range | tuple[str, ...]]] = {}
    # Fields that change only how a trained network is used (e.g. sampling steps): overriding them reuses the
    # checkpoint instead of training a new one.
    INFERENCE_FIELDS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def profile(cls, name: str, **overrides) -> Settings:
        if name not in cls.PROFILES:
            raise ValueError(f"unknown profile {name!r}; choose from {', '.join(cls.PROFILES)}.")
        return cls(**{**cls.PROFILES[name], **overrides})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def ranges(cls) -> dict[str, Range | tuple[str, ...]]:
        """Every field's declared range (RANGES of this class and of each class it extends)."""
        out: dict = {}
        for klass in reversed(cls.__mro__):
            out.update(vars(klass).get("RANGES", {}))
        return out

    @classmethod
    def coerce(cls, name: str, value: Any) -> Any:
        """`value` (text from the command line, a checkpoint header's JSON, or a Python value) as the type of field
        `name`, inside its declared range; one clear error for an unknown field or a value of the wrong type or
        outside the range."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=3, cutoff=0.6)
            hint = (f"did you mean {', '.join(close)}?" if close else f"its fields are {', '.join(fields)}." if fields
                    else "it has no settings.")
            raise ValueError(f"no config field {name!r}; {hint}")
        f = fields[name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind, allowed = type(default), cls.ranges().get(name)
        what = _KIND_NAMES.get(kind, kind.__name__)
        try:
            out = _coerce(value, kind)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{name} takes {what}{_range_text(allowed)}, not {value!r}.") from None
        items = out if kind is tuple else (out,)
        if isinstance(allowed, Range) and not all(isinstance(v, (int, float)) and allowed.holds(v) for v in items):
            raise ValueError(f"{name} takes {what}{_range_text(allowed)}, not {value!r}.")
        if isinstance(allowed, tuple) and not isinstance(allowed, Range) and out not in allowed:
            raise ValueError(f"{name} takes one of {', '.join(allowed)}, not {value!r}.")
        return out

    @classmethod
    def checked(cls, values: dict, where: str) -> Settings:
        """A config from values read elsewhere (a checkpoint's header, a manifest), each checked as `--set` checks
        it; the first bad one is one sentence naming `where`. Fields it does not know are left out."""
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: cls.coerce(k, v) for k, v in values.items() if k in known})
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    def problems(self) -> list[str]:
        """Each field whose value lies outside its type or range (empty for a valid config)."""
        out = []
        for f in dataclasses.fields(self):
            try:
                self.coerce(f.name, getattr(self, f.name))
            except ValueError as exc:
                out.append(str(exc))
        return out

    @classmethod
    def split_overrides(cls, overrides: dict) -> tuple[dict, dict]:
        """(fields that change training, fields that change only inference) of `overrides`."""
        train = {k: v for k, v in overrides.items() if k not in cls.INFERENCE_FIELDS}
        return train, {k: v for k, v in overrides.items() if k in cls.INFERENCE_FIELDS}


@dataclass
class MethodConfig(Settings):
    """Fields every learned method shares; subclasses add their own. Profiles override defaults."""

    iterations: int = 1000
    batch_size: int = 16
    patch_size: int = 64
    lr: float = 1e-4
    val_every: int = 250
    ema_decay: float = 0.0  # 0 disables EMA
    # weight each (anatomy, dose) cell's loss by 1 / its input error (training.cell_weights); False trains
    # on the papers' plain MSE
    balance_cells: bool = True
    # stop a stage once its best validation PSNR rose by less than this (dB) over the last fifth of its steps
    # (`iterations` is then the cap); 0 trains every stage to its full budget
    plateau_db: float = 0.0

    RANGES: ClassVar[dict[str, Range | tuple[str, ...]]] = {
        "iterations": Range(1, 1e8), "batch_size": Range(1, 4096), "patch_size": Range(0, 4096),  # 0: whole slices
        "lr": Range(0, 1, open_low=True), "val_every": Range(1, 1e8), "ema_decay": Range(0, 1, open_high=True),
        "plateau_db": Range(0, 100)}

    def stage_iterations(self, stage: str) -> int:
        """The iteration budget of training stage `stage`; methods with several stages give each its own."""
        return self.iterations

    def stage_batch_size(self, stage: str) -> int:
        """How many patches (and whole slices) the harness draws per step of `stage`."""
        return self.batch_size


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "text", tuple: "a comma list"}


def _range_text(allowed) -> str:
    return f" in {allowed}" if isinstance(allowed, Range) else ""


def _coerce(value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in _TRUE + _FALSE:
            return str(value).lower() in _TRUE
        raise ValueError(value)
    if kind is tuple:
        items = value if isinstance(value, (list, tuple)) else split_list(str(value).strip("()[] "))
        return tuple(_number(t) if isinstance(t, str) else t for t in items)
    if isinstance(value, bool) or (kind is str and not isinstance(value, str)):
        raise TypeError(value)
    if kind is int:
        number = float(value) if isinstance(value, str) else value
        if isinstance(number, float) and not number.is_integer():
            raise ValueError(value)
        if not isinstance(number, (int, float)):
            raise TypeError(value)
        return int(number)
    if kind is float and not isinstance(value, (str, int, float)):
        raise TypeError(value)
    return kind(value)


def _number(text: str) -> Any:
    """'3' -> 3, '0.5' -> 0.5, 'x' -> 'x' (the items of a tuple field)."""
    for kind in (int, float):
        try:
            return kind(text.strip())
        except ValueError:
            pass
    return text.strip()


def _renamed(state: dict[str, torch.Tensor], src: str, dst: str) -> dict[str, torch.Tensor]:
    """The tensors of module `src` in a state dict, under module `dst`'s names."""
    return {f"{dst}.{k[len(src) + 1:]}": v for k, v in state.items() if k.startswith(f"{src}.")}


class Method:
    """Base class; see the module docstring."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Config: ClassVar[type] = MethodConfig
    context: ClassVar[int] = 0  # adjacent slices per side the method reads
    learned: ClassVar[bool] = True
    stages: ClassVar[tuple[str, ...]] = ("main",)
    # Why `--methods all` leaves the method out ('' to include it): said by `ldct-bench methods`; it runs when named.
    too_slow_for_all: ClassVar[str] = ""
    # Networks whose weights file keeps only their running average, {average: network} (modules() names): inference
    # uses the average, and loading restores the network from it; training resumes from its state, which holds both.
    averaged: ClassVar[dict[str, str]] = {}

    def __init__(self, config: Settings | None = None, device: str | torch.device = "cpu"):
        self.config = config if config is not None else self.Config.profile("quick")
        self.device = torch.device(device)

    # -- declared capabilities (override where the method has them) -------------------------------------
    @classmethod
    def unavailable(cls) -> str:
        """Why this method cannot run here ('' when it can); `--methods all` skips unavailable ones."""
        return ""

    @classmethod
    def needs(cls) -> str:
        """What the method needs beyond its checkpoint and where it looked for it ('' for nothing), for
        `ldct-bench methods`."""
        return ""

    def validates(self, stage: str) -> bool:
        """Whether the harness scores validation PSNR during `stage` (not for stages that train no denoiser)."""
        return True

    def perceive(self, ld_hu: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """What the method perceives in whole slices (N, 1, H, W) HU, stored beside the scores; None when it
        perceives nothing (the default). A perceiving method returns `dose` (N, D) embeddings, `dose_score` (N,),
        `estimated_dose` (N,) dose fractions and `estimated_anatomy` (N,) indices into ANATOMIES."""
        return None

    def kernels(self, training: bool = False) -> str:
        """Which implementation of its own operations the method runs on its device ('' for plain PyTorch), so that
        `ldct-bench bench` says what it timed."""
        return ""

    @property
    def sampling_steps(self) -> int | None:
        """Network evaluations per denoised slice of an iterative (diffusion) method; None for one pass."""
        return None

    # -- building from outside values ---------------------------------------------------------------------
    @classmethod
    def configure(cls, profile: str, overrides: dict | None = None, where: str = "--set") -> Settings:
        """The config of `profile` with `overrides` on top, each value checked for type and range and the network it
        describes bounded in size (check_size), before anything is allocated."""
        base = cls.Config.profile(profile)
        config = cls.Config.checked({**base.to_dict(), **(overrides or {})}, where)
        cls.check_size(config, where)
        return config

    @classmethod
    def check_size(cls, config: Settings, where: str) -> int:
        """The parameter count `config` asks for, counted on PyTorch's meta device (no memory is allocated); one
        sentence when it exceeds MAX_PARAMETERS or the networks cannot be built from it."""
        if not cls.learned:
            return 0
        try:
            with torch.device("meta"):
                n = cls(config, "meta").n_parameters()
        except (RuntimeError, ValueError, TypeError, AssertionError, ZeroDivisionError, IndexError) as exc:
            raise ValueError(f"{where}: this {cls.name} config does not describe a network that can be built "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}).") from None
        if n > MAX_PARAMETERS:
            raise ValueError(f"{where}: this {cls.name} config asks for {n:,} parameters, over the {MAX_PARAMETERS:,} "
                             "the suite builds; lower its widths or depths.")
        return n

    # -- weights ------------------------------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        """The networks whose weights define the method at inference (saved in checkpoints)."""
        return {}

    def n_parameters(self) -> int:
        """Parameters of the networks themselves (EMA shadow copies are not counted twice)."""
        seen, total = set(), 0
        for key, m in self.modules().items():
            if key.endswith("ema"):
                continue
            for p in m.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel()
        return total

    def trained_modules(self, stage: str) -> tuple[str, ...]:
        """Attribute names of the networks `stage` trains (wrapped in DDP under torchrun)."""
        return tuple(k for k in self.modules() if not k.endswith("ema"))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{k}.{n}": t.detach().cpu().contiguous() for k, m in self.modules().items()
                for n, t in bare(m).state_dict().items()}

    def weights(self) -> dict[str, torch.Tensor]:
        """What the weights file holds: the state dict less the networks kept as their average (`averaged`)."""
        drop = tuple(f"{net}." for net in self.averaged.values())
        return {k: v for k, v in self.state_dict().items() if not k.startswith(drop)}

    def load_state_dict(self, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        for average, net in self.averaged.items():
            if not any(k.startswith(f"{net}.") for k in state):  # a weights file: the network starts from its average
                state = {**state, **_renamed(state, average, net)}
            elif not any(k.startswith(f"{average}.") for k in state):  # saved before the method kept an average:
                state = {**state, **_renamed(state, net, average)}  # the network, unaveraged, is its own
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
        if missing or unexpected or wrong:
            detail = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected
                      else f"shape of {wrong[0]} is {tuple(state[wrong[0]].shape)}, expected {tuple(own[wrong[0]].shape)}")
            raise ValueError(f"{source} does not fit method {self.name!r} with this config ({detail}); "
                             "was it saved by another method or profile?")
        for k, m in self.modules().items():
            prefix = k + "."
            bare(m).load_state_dict({n[len(prefix):]: t for n, t in state.items() if n.startswith(prefix)})

    def save(self, path: Path, extra: dict | None = None) -> None:
        """Weights as safetensors, with the method name and config in the header; the same weights and header
        give the same bytes (so the same sha256), whichever process saves them."""
        from .atomic import atomic_path

        meta = {"method": self.name, "config": json.dumps(self.config.to_dict()), **(extra or {})}
        data = canonical_safetensors(self.weights(), {k: str(v) for k, v in meta.items()})
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)

    @classmethod
    def load(cls, path: Path, device: str | torch.device = "cpu", overrides: dict | None = None) -> Method:
        """Rebuild a method from its checkpoint (config from the header, then `overrides` on top)."""
        meta, state = read_checkpoint(path)
        if meta.get("method") != cls.name:
            raise ValueError(f"checkpoint {path} belongs to method {meta.get('method')!r}, not {cls.name!r}.")
        try:
            saved = json.loads(meta["config"])
            if not isinstance(saved, dict):
                raise ValueError(saved)
        except (KeyError, ValueError):
            raise ValueError(f"checkpoint {path} carries no readable config in its metadata; was it saved by "
                             "ldct-bench? Retrain it with `ldct-bench train`.") from None
        where = f"checkpoint {path}'s config"  # a header is input: checked like --set before any network is built
        config = cls.Config.checked({**saved, **(overrides or {})}, where)
        cls.check_size(config, where)
        method = cls(config, device)
        method.load_state_dict(state, source=f"checkpoint {path}")
        method.train(False)
        return method

    # -- inference ----------------------------------------------------------------------------------------
    def denoise(self, ld_hu: torch.Tensor) -> torch.Tensor:
        """(N, 1 + 2*context, H, W) HU -> (N, 1, H, W) HU."""
        raise NotImplementedError

    def for_inference(self) -> Method:
        """Evaluation mode, with the networks' weights in channels-last order: oneDNN's convolutions then skip
        their layout conversions (1.7-2.1x faster on CPU for the CNN baselines; outputs agree within 1e-3 HU)."""
        self.train(False)
        for m in self.modules().values():
            m.to(memory_format=torch.channels_last)
        return self

    # -- training -----------------------------------------------------------------------------------------
    def setup_training(self, stage: str) -> None:
        """Create optimisers etc. for `stage` (called before the first train_step or a resume)."""

    def train_step(self, batch: dict, step: int, stage: str) -> dict[str, float]:
        """One optimiser step on `batch` (ld, fd patches in HU; dose, anatomy; per-sample loss `weight`,
        which pixel losses should apply through `weighted_mse`). Returns the numbers to log."""
        raise NotImplementedError

    def training_state(self) -> dict:
        """Everything besides weights needed to resume (optimiser states, EMA copies...)."""
        return {}

    def load_training_state(self, state: dict) -> None:
        pass

    def finish_stage(self, stage: str, pairs=None) -> None:
        """Hook after a stage ends, given the training pairs (e.g. fit DA-CLIP's read-outs, then freeze it)."""

    def train(self, mode: bool = True) -> None:
        for m in self.modules().values():
            m.train(mode)


def training_record(path: Path) -> Path | None:
    """The manifest the training harness wrote beside weights `path` (it records their sha256), or None where no
    manifest names this file: such weights load as given, and whoever loads them says so."""
    manifest = Path(path).parent / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        named = json.loads(manifest.read_text()).get("weights", "weights.safetensors")
    except (ValueError, AttributeError):
        return manifest  # unreadable: read_checkpoint says so
    return manifest if named == Path(path).name else None


def canonical_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """safetensors bytes with the header's keys in sorted order. safetensors writes its metadata from a hash map
    whose order changes with every save, so two trainings that end with the same weights got two sha256s, and a run
    folder took an identical checkpoint for a changed one. The header is rewritten in place: an 8-byte little-endian
    length, the JSON padded with spaces to a multiple of 8, then the tensors (whose offsets count from there)."""
    from safetensors.torch import save

    raw = save(tensors, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8:8 + n]), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + raw[8 + n:]


def read_checkpoint(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist.")
    trained = training_record(path)
    if trained is not None:
        from .data.dataset import intact

        try:
            expected = json.loads(trained.read_text()).get("sha256")
        except (ValueError, AttributeError):
            raise ValueError(f"checkpoint manifest {trained} is not valid JSON; restore or retrain it.") from None
        if not expected:
            raise ValueError(f"checkpoint manifest {trained} records no sha256 for {path.name} (its training did not "
                             "finish); finish it with `ldct-bench train`, or retrain with `ldct-bench train --retrain`.")
        if not intact(path, expected):
            raise ValueError(f"checkpoint {path} does not match the sha256 in {trained} (damaged or edited); restore "
                             "it (git checkout for the committed ones) or retrain with `ldct-bench train --retrain`.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        return meta, load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"checkpoint {path} is not a readable safetensors file ({exc}).") from None


# ------------------------------------------------------------------------------------------------ registry
_REGISTRY: dict[str, type[Method]] | None = None


def registry() -> dict[str, type[Method]]:
    """Every method registered in the entry-point group, by name (loaded once per process)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _load_entry_points()
    return dict(_REGISTRY)


def _load_entry_points() -> dict[str, type[Method]]:
    found: dict[str, type[Method]] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            raise ValueError(f"two packages register a method named {ep.name!r}; uninstall one of them.")
        try:
            cls = ep.load()
        except Exception as exc:
            raise ValueError(f"method plug-in {ep.name!r} ({ep.value}) failed to import: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, Method)) or cls.name != ep.name:
            raise ValueError(f"entry point {ep.name!r} must name a Method subclass whose `name` is {ep.name!r}; "
                             f"{ep.value} is not one.")
        found[ep.name] = cls
    if not found:
        raise ValueError(f"no methods are registered in the entry-point group {ENTRY_POINT_GROUP!r}; "
                         "install the suite with `pip install -e .` (again, after changing pyproject.toml).")
    return found


def get_method(name: str) -> type[Method]:
    reg = registry()
    if name not in reg:
        close = difflib.get_close_matches(name, list(reg), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown method {name!r}.{hint} Available: {', '.join(sorted(reg))}.")
    return reg[name]
