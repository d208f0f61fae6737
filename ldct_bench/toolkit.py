"""The method author's toolkit, next to the Method API: HU scaling, the loss, EMA, the learning-rate schedule,
small layers and the data-parallel helpers.

Methods import from `ldct_bench.methods` and from here only, never from the training harness or the
runner, so a method (built-in or plug-in) can be read, tested and shipped on its own.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .conventions import ANATOMIES, NETWORK_RANGE_HU

__all__ = ["ANATOMIES", "ANATOMY_INDEX", "EMA", "SinusoidalPosEmb", "average_gradients", "bare", "centre_slice",
           "estimate_noise_sd", "exponential_decay", "filter_noise_sd", "hu_to_unit", "unit_to_hu", "weighted_mse",
           "zero_init"]

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


def estimate_noise_sd(hu: np.ndarray, levels: int = 2) -> float:
    """The pixel noise SD (HU) of one CT slice, from the slice alone: the energy of its two finest orthonormal
    Haar detail levels (all three orientations) over flat soft tissue, which is the noise variance there minus
    what lies below a quarter of Nyquist. Donoho's finest-diagonal MAD (scikit-image's `estimate_sigma`) assumes
    white noise and reads FBP's ramp-shaped noise 13-30 % low, by an amount that varies with the body's size;
    two levels hold nearly all of a ramp spectrum, so no calibration constant is needed. Flat: smoothed HU in
    -300..300, 3 px in from the region's edge, smoothed gradient below 1.5x its median there. Each band's energy
    is a 3-sigma-clipped mean square (corrected for the clipping of a Gaussian), so that thin structures inside
    soft tissue (fat between muscles, small vessels) are not read as noise: on the realistic phantoms the plain
    mean square read chest 50 % 17 % high. Tested against the simulator's known SD on flat regions
    (tests/test_classical.py)."""
    from scipy import ndimage

    x = np.asarray(hu, dtype=np.float64)
    x = x[: x.shape[0] // 2**levels * 2**levels, : x.shape[1] // 2**levels * 2**levels]
    smooth = ndimage.uniform_filter(x, 5)
    flat = ndimage.binary_erosion((smooth > -300) & (smooth < 300), iterations=3)
    if flat.sum() < 64:  # no soft tissue (a phantom of air, a lung-only crop): the whole slice
        flat = np.ones_like(flat)
    gradient = ndimage.gaussian_gradient_magnitude(x, 2.0)
    flat &= gradient <= 1.5 * np.median(gradient[flat])
    variance = 0.0
    for level in range(1, levels + 1):
        a, b, c, d = x[0::2, 0::2], x[0::2, 1::2], x[1::2, 0::2], x[1::2, 1::2]
        flat = flat[0::2, 0::2] & flat[0::2, 1::2] & flat[1::2, 0::2] & flat[1::2, 1::2]
        details = ((a - b + c - d) / 2, (a + b - c - d) / 2, (a - b - c + d) / 2)
        if flat.any():
            variance += 4.0 ** -level * sum(_clipped_energy(band[flat]) for band in details)
        x = (a + b + c + d) / 2
    return float(np.sqrt(variance))


MIN_FILTER_NOISE_HU = 0.1  # far below any CT slice's noise


def filter_noise_sd(hu: np.ndarray) -> float:
    """The noise SD (HU) a filter's strength is scaled by: estimate_noise_sd, but at least a tenth of a HU. A
    noiseless slice (a truth, a synthetic image) reads 0, and a strength of 0 divides by zero (TV's weight, a
    bilateral range width); a tenth of a HU leaves such a slice as it is."""
    return max(estimate_noise_sd(hu), MIN_FILTER_NOISE_HU)


def _clipped_energy(values: np.ndarray, rounds: int = 3) -> float:
    """The mean square of the Gaussian part of `values`: start from the MAD, then keep what lies within 3 SD and
    divide its mean square by 0.9733 (what a Gaussian keeps of its variance inside +-3 SD), a few times."""
    energy = (float(np.median(np.abs(values))) / 0.6745) ** 2
    for _ in range(rounds):
        kept = values[values**2 <= 9.0 * energy]
        energy = float(np.mean(kept**2)) / 0.9733 if kept.size else 0.0
    return energy


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

    @torch.no_grad()
    def step(self, module: nn.Module, step: int, every: int = 1, start: int = 0) -> None:
        """Follow `module` after its optimiser step `step` (0-based): before the `start`-th step the average is the
        weights themselves (an average over the first, poor weights would only lag), from it on it moves every
        `every` steps."""
        if step + 1 < start:
            self.shadow.load_state_dict(module.state_dict())
        elif (step + 1) % every == 0:
            self.update(module)


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
