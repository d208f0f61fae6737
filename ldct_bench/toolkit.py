"""The method author's toolkit, next to the Method API: HU scaling, the loss, EMA, the learning-rate schedule,
small layers and the data-parallel helpers.

Methods import from `ldct_bench.methods` and from here only, never from the training harness or the
runner, so a method (built-in or plug-in) can be read, tested and shipped on its own.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .conventions import ANATOMIES, NETWORK_RANGE_HU

__all__ = ["ANATOMIES", "ANATOMY_INDEX", "EMA", "SinusoidalPosEmb", "average_gradients", "bare", "centre_slice",
           "exponential_decay", "hu_to_unit", "unit_to_hu", "weighted_mse", "zero_init"]

# The anatomy label a batch carries is its index in ANATOMIES (-1 for any other region).
ANATOMY_INDEX = {a: i for i, a in enumerate(ANATOMIES)}

HU_LO, HU_HI = (float(v) for v in NETWORK_RANGE_HU)


# ------------------------------------------------------------------------------------------------ images
def hu_to_unit(hu: torch.Tensor, lo: float = HU_LO, hi: float = HU_HI) -> torch.Tensor:
    """HU -> the network's scale: [lo, hi] maps to [0, 1] (default: conventions.NETWORK_RANGE_HU)."""
    return (hu - lo) / (hi - lo)


def unit_to_hu(x: torch.Tensor, lo: float = HU_LO, hi: float = HU_HI) -> torch.Tensor:
    """The inverse of hu_to_unit."""
    return x * (hi - lo) + lo


def centre_slice(ld_hu: torch.Tensor) -> torch.Tensor:
    """The slice being denoised, out of (N, 1 + 2k, H, W) context stacks."""
    c = ld_hu.shape[1] // 2
    return ld_hu[:, c:c + 1]


# -------------------------------------------------------------------------------------------------- loss
def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """MSE with one weight per sample (the harness's cell-balancing `batch["weight"]`); plain MSE without."""
    per_sample = ((pred - target) ** 2).flatten(1).mean(dim=1)
    return per_sample.mean() if weight is None else (per_sample * weight.to(per_sample)).mean()


# ------------------------------------------------------------------------------------------- optimisation
def exponential_decay(optimizer: torch.optim.Optimizer, config) -> torch.optim.lr_scheduler.ExponentialLR:
    """Per-step exponential decay of the learning rate from `config.lr` to `config.lr_final` over
    `config.iterations` steps (RED-CNN's schedule; the quick WGAN's too)."""
    gamma = (config.lr_final / config.lr) ** (1 / max(1, config.iterations))
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)


class EMA:
    """Exponential moving average of a module's weights (used for inference when enabled)."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(module).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for s, p in zip(self.shadow.parameters(), module.parameters()):
            s.lerp_(p.detach(), 1 - self.decay)
        for s, b in zip(self.shadow.buffers(), module.buffers()):
            s.copy_(b)


# ------------------------------------------------------------------------------------------------ layers
def zero_init(layer: nn.Module) -> nn.Module:
    """Zero weight and bias: a read-out or gate that starts switched off, so the network around it starts
    as its shortcut (the identity, for a residual read-out) and training only moves it where that helps."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class SinusoidalPosEmb(nn.Module):
    """Transformer-style sinusoidal embedding of a (possibly fractional) diffusion time step."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t):
        half = self.dim // 2
        freq = torch.exp(torch.arange(half, device=t.device) * -(math.log(10000) / (half - 1)))
        arg = t.float()[:, None] * freq[None]
        return torch.cat((arg.sin(), arg.cos()), dim=-1)


# ---------------------------------------------------------------------------------------- data-parallel
def bare(module: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (the harness wraps what a stage trains)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def average_gradients(module: nn.Module) -> None:
    """What DDP does, by hand, for a network DDP cannot wrap (WGAN's critic: its gradient penalty needs double
    backward). Nothing happens outside a multi-process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()
