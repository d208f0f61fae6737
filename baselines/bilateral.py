"""The trainable bilateral filter (Wagner et al., "Ultralow-parameter denoising: trainable bilateral filter layers in
computed tomography", Med. Phys. 2022): a few stacked bilateral filters whose spatial and range widths are learned
by gradient descent, nine numbers in all. Its authors chose it for robustness: a filter cannot hallucinate
structure, and nine parameters cannot fit one dose or anatomy.

Ours is plain PyTorch, vectorised over the window with `unfold`, differentiated by autograd (the authors wrote a
C++/CUDA kernel with its analytic gradient; tests/test_bilateral.py checks ours against the direct
bilateral filter and autograd against finite differences). Slices are 2-D, so each layer has two spatial widths
(x, y) and one range width; the authors' third spatial width runs along z. Departures: the widths are learned as
logarithms (Adam's steps are then relative and a width cannot go negative), and the window radius is
ceil(3 sigma), capped (`max_radius`), where theirs is fixed by the initial sigma.

One option beyond the paper, on in the quick profile (the reference generalist): `range_from_noise` learns each
range width as a multiple of the noise SD the input slice shows (toolkit.filter_noise_sd) instead of in HU. The
authors train one filter per dose; a generalist with fixed widths must serve 10 % and 50 % at once and
over-smooths the quieter dose (on the validation split, 50 %: -0.95 dB head, -0.46 dB chest). A range width that
follows the noise is the classical bilateral's own rule (Zhang and Gunturk, IEEE TIP 2008: the best range width
grows linearly with the noise SD); it keeps nine numbers and cannot hallucinate either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ldct_bench.methods import MethodConfig, Range
from ldct_bench.toolkit import filter_noise_sd, hu_to_unit, unit_to_hu

from .supervised import SupervisedMSE


def bilateral_filter(x: torch.Tensor, sigma_xy: torch.Tensor, sigma_range: torch.Tensor, radius: int) -> torch.Tensor:
    """(N, 1, H, W) -> (N, 1, H, W): each pixel the average of its (2 radius + 1)^2 window weighted by
    exp(-dx^2 / 2 sx^2 - dy^2 / 2 sy^2 - (x_q - x_p)^2 / 2 sr^2); the border reflected. Differentiable in x and the
    three widths."""
    n, _, h, w = x.shape
    size = 2 * radius + 1
    window = F.unfold(F.pad(x, (radius,) * 4, mode="reflect"), size).view(n, size * size, h * w)
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    spatial = -(dx.reshape(-1, 1) ** 2) / (2 * sigma_xy[0] ** 2) - dy.reshape(-1, 1) ** 2 / (2 * sigma_xy[1] ** 2)
    centre = x.reshape(n, 1, h * w)
    weight = torch.exp(spatial - (window - centre) ** 2 / (2 * sigma_range**2))  # the centre's weight is 1: no 0/0
    return ((weight * window).sum(1) / weight.sum(1)).view(n, 1, h, w)


class BilateralLayer(nn.Module):
    """One trainable bilateral filter: log widths (x, y in pixels; range in the network's unit scale, or in noise
    SDs where `forward` is given the input's noise)."""

    def __init__(self, sigma_spatial: float, sigma_range: float, max_radius: int):
        super().__init__()
        self.log_sigma_xy = nn.Parameter(torch.full((2,), math.log(sigma_spatial)))
        self.log_sigma_range = nn.Parameter(torch.tensor(math.log(sigma_range)))
        self.max_radius = max_radius

    def forward(self, x, noise: torch.Tensor | None = None):
        """noise: (N,) the noise SD of each image (unit scale), the range width's unit; None: the width is absolute."""
        sigma_xy = self.log_sigma_xy.exp()
        radius = max(1, min(self.max_radius, math.ceil(3 * float(sigma_xy.detach().max()))))
        radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)  # reflection needs a border inside the image
        sigma_range = self.log_sigma_range.exp()
        if noise is None:
            return bilateral_filter(x, sigma_xy, sigma_range, radius)
        widths = sigma_range * noise.to(x).view(-1, 1, 1)  # one range width per image
        return bilateral_filter(x, sigma_xy, widths, radius)


class TrainableBilateral(nn.Module):
    def __init__(self, layers: int = 3, sigma_spatial: float = 0.5, sigma_range: float = 0.01, max_radius: int = 5):
        super().__init__()
        self.layers = nn.Sequential(*(BilateralLayer(sigma_spatial, sigma_range, max_radius) for _ in range(layers)))

    def forward(self, x, noise: torch.Tensor | None = None):
        for layer in self.layers:
            x = layer(x, noise)
        return x


@dataclass
class BilateralConfig(MethodConfig):
    layers: int = 3
    sigma_spatial_init: float = 0.5  # pixels: the authors' initial value (eeulig/ldct-benchmark too)
    sigma_range_init: float = 0.01  # the network's unit scale (4095 HU wide): 41 HU
    max_radius: int = 5
    lr_range: float = 1e-2  # the authors give the range width its own learning rate
    lr_final: float = 1e-2  # no decay: nine widths
    range_from_noise: bool = False  # range widths in noise SDs of the input (see the module's docstring)
    range_per_noise_init: float = 2.0  # their initial value then: Zhang and Gunturk's optimum lies near 2 SD

    RANGES: ClassVar[dict] = {"layers": Range(1, 16), "sigma_spatial_init": Range(0, 50, open_low=True),
                              "sigma_range_init": Range(0, 10, open_low=True), "max_radius": Range(1, 32),
                              "lr_range": Range(0, 1, open_low=True), "lr_final": Range(0, 1, open_low=True),
                              "range_per_noise_init": Range(0, 100, open_low=True)}
    PROFILES: ClassVar[dict] = {
        # paper: three layers trained with Adam on whole slices' patches (their sigma_r got its own rate)
        "paper": dict(layers=3, patch_size=128, batch_size=16, lr=1e-2, lr_range=1e-2, iterations=5000, val_every=250,
                      plateau_db=0.02),
        # CPU: the same nine parameters on smaller patches, to their validation plateau; the reference generalist
        # (10 and 50 %) with its range widths in noise SDs, decided on the validation split (module docstring)
        "quick": dict(layers=3, patch_size=64, batch_size=8, lr=1e-2, lr_range=1e-2, iterations=3000, val_every=100,
                      plateau_db=0.02, range_from_noise=True),
    }


class Bilateral(SupervisedMSE):
    name = "bilateral"
    description = "Trainable bilateral filter (Wagner et al., Med. Phys. 2022): 3 stacked filters, 9 learned widths"
    Config = BilateralConfig

    def __init__(self, config=None, device="cpu"):
        super().__init__(config, device)
        self._noise: dict[int, float] = {}  # a slice's noise SD by its bytes: training revisits each slice often

    def network(self):
        c = self.config
        sigma_range = c.range_per_noise_init if c.range_from_noise else c.sigma_range_init
        return TrainableBilateral(c.layers, c.sigma_spatial_init, sigma_range, c.max_radius)

    def noise(self, slices_hu: torch.Tensor) -> torch.Tensor | None:
        """(N, 1, H, W) whole slices -> (N,) the noise SD of each in the network's unit scale (None when the range
        widths are absolute)."""
        if not self.config.range_from_noise:
            return None
        sds = []
        for s in slices_hu[:, 0].detach().cpu().float().numpy():
            key = hash(s.tobytes())
            if key not in self._noise:
                self._noise[key] = filter_noise_sd(s)
            sds.append(self._noise[key])
        return hu_to_unit(torch.tensor(sds)) - hu_to_unit(torch.tensor(0.0))

    def predict(self, ld, slices_hu):
        return self.net(ld, self.noise(slices_hu))

    def for_inference(self):
        self.train(False)  # a filter of nine numbers: nothing to gain from the channels-last layout
        return self

    def parameter_groups(self):
        """The range widths at their own rate, as the authors train them."""
        named = list(self.net.named_parameters())
        return [{"params": [p for n, p in named if "range" not in n]},
                {"params": [p for n, p in named if "range" in n], "lr": self.config.lr_range}]

    def widths(self) -> list[dict[str, float]]:
        """The learned widths of each layer (x, y in pixels; range in HU, or in noise SDs with range_from_noise)."""
        scale = 1.0 if self.config.range_from_noise else float(unit_to_hu(torch.tensor(1.0)) - unit_to_hu(torch.tensor(0.0)))
        unit = "sigma_range_noise_sd" if self.config.range_from_noise else "sigma_range_hu"
        return [{"sigma_x": float(layer.log_sigma_xy[0].detach().exp()),
                 "sigma_y": float(layer.log_sigma_xy[1].detach().exp()),
                 unit: float(layer.log_sigma_range.detach().exp() * scale)} for layer in self.net.layers]
