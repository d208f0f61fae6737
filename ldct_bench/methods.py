"""The Method protocol and the registry.

A method is a class with a name, a config dataclass (with `quick` and `paper` profiles),
`denoise(ld_hu) -> hu`, and, if it learns, `train_step`. The runner hands it HU and gets
HU back; normalisation is the method's own business.

Built-ins register with `@register`; third-party packages declare an entry point:

    [project.entry-points."ldct_bench.methods"]
    mymethod = "mypkg.module:MyMethod"
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from .distributed import bare

HU_LO, HU_HI = -1024.0, 3072.0


def hu_to_unit(hu: torch.Tensor, lo: float = HU_LO, hi: float = HU_HI) -> torch.Tensor:
    return (hu - lo) / (hi - lo)


def unit_to_hu(x: torch.Tensor, lo: float = HU_LO, hi: float = HU_HI) -> torch.Tensor:
    return x * (hi - lo) + lo


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """MSE with one weight per sample (the harness's cell-balancing `batch["weight"]`); plain MSE without."""
    per_sample = ((pred - target) ** 2).flatten(1).mean(dim=1)
    return per_sample.mean() if weight is None else (per_sample * weight.to(per_sample)).mean()


@dataclass
class MethodConfig:
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

    PROFILES: ClassVar[dict[str, dict]] = {"quick": {}, "paper": {}}

    @classmethod
    def profile(cls, name: str, **overrides) -> "MethodConfig":
        if name not in cls.PROFILES:
            raise ValueError(f"unknown profile {name!r}; choose from {', '.join(cls.PROFILES)}.")
        return cls(**{**cls.PROFILES[name], **overrides})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Method:
    """Base class; see the module docstring."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Config: ClassVar[type] = MethodConfig
    context: ClassVar[int] = 0  # adjacent slices per side the method reads
    learned: ClassVar[bool] = True
    stages: ClassVar[tuple[str, ...]] = ("main",)

    def __init__(self, config: MethodConfig | None = None, device: str | torch.device = "cpu"):
        self.config = config if config is not None else self.Config.profile("quick")
        self.device = torch.device(device)

    @classmethod
    def unavailable(cls) -> str:
        """Why this method cannot run here ('' when it can); `--methods all` skips unavailable ones."""
        return ""

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

    def load_state_dict(self, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
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
        """Weights as safetensors, with the method name and config in the header."""
        from safetensors.torch import save_file

        from .atomic import atomic_path

        meta = {"method": self.name, "config": json.dumps(self.config.to_dict()), **(extra or {})}
        with atomic_path(path) as tmp:
            save_file(self.state_dict(), str(tmp), metadata={k: str(v) for k, v in meta.items()})

    @classmethod
    def load(cls, path: Path, device: str | torch.device = "cpu") -> "Method":
        """Rebuild a method from its checkpoint (config from the header)."""
        meta, state = read_checkpoint(path)
        if meta.get("method") != cls.name:
            raise ValueError(f"checkpoint {path} belongs to method {meta.get('method')!r}, not {cls.name!r}.")
        fields = {f.name for f in dataclasses.fields(cls.Config)}
        cfg = cls.Config(**{k: v for k, v in json.loads(meta["config"]).items() if k in fields})
        method = cls(cfg, device)
        method.load_state_dict(state, source=f"checkpoint {path}")
        method.train(False)
        return method

    # -- inference ----------------------------------------------------------------------------------------
    def denoise(self, ld_hu: torch.Tensor) -> torch.Tensor:
        """(N, 1 + 2*context, H, W) HU -> (N, 1, H, W) HU."""
        raise NotImplementedError

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

    def for_inference(self) -> "Method":
        """Evaluation mode, with the networks' weights in channels-last order: oneDNN's convolutions then skip
        their layout conversions (1.7-2.1x faster on CPU for the CNN baselines; outputs agree within 1e-3 HU)."""
        self.train(False)
        for m in self.modules().values():
            m.to(memory_format=torch.channels_last)
        return self


def read_checkpoint(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        return meta, load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"checkpoint {path} is not a readable safetensors file ({exc}).") from None


# ------------------------------------------------------------------------------------------------ registry
_REGISTRY: dict[str, type[Method]] = {}
_LOADED = False


def register(cls: type[Method]) -> type[Method]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name; set the class attribute `name`.")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import baselines  # noqa: F401  (registers the built-ins)
    import founddiff  # noqa: F401

    for ep in metadata.entry_points(group="ldct_bench.methods"):
        if ep.name not in _REGISTRY:
            cls = ep.load()
            _REGISTRY.setdefault(getattr(cls, "name", "") or ep.name, cls)


def registry() -> dict[str, type[Method]]:
    _load_all()
    return dict(_REGISTRY)


def get_method(name: str) -> type[Method]:
    reg = registry()
    if name not in reg:
        close = difflib.get_close_matches(name, list(reg), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown method {name!r}.{hint} Available: {', '.join(sorted(reg))}.")
    return reg[name]


def resolve_methods(text: str) -> list[str]:
    """'all' -> every registered method that runs out of the box; 'a,b' -> those (validated)."""
    reg = registry()
    if text.strip() == "all":
        return [n for n, c in reg.items() if not c.unavailable()]
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError("no methods given; write e.g. --methods ldct,redcnn or --methods all.")
    for n in names:
        get_method(n)
    return names
