"""SS2D: the 2-D selective-scan branch of FoundDiff's DACB (EfficientVMamba-style).

The feature map is split into its four 2x2-interleaved sub-grids; two are scanned
row-major and two column-major, each with its own projections (x_proj, dt_proj, A, D),
and the results are put back in place. The anatomy embedding from DA-CLIP enters as a
learned per-channel offset added to the scan output before the output projection.
Parameter names and shapes follow VMamba / the FoundDiff release (x_proj_weight,
dt_projs_weight, dt_projs_bias, A_logs, Ds), whatever backend runs the scan.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .selective_scan import needs_grad, resolve_backend, scan_rows, selective_scan

K_DIRECTIONS = 4
SUBGRID_PARITIES = ((0, 0), (1, 0), (0, 1), (1, 1))  # (row, column) parity of interleaved_scan's sub-grids


def interleaved_scan(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W), H and W even -> (B, 4, C, H/2 * W/2) sequences."""
    return torch.stack([x[:, :, ::2, ::2].flatten(2),
                        x[:, :, 1::2, ::2].transpose(2, 3).flatten(2),
                        x[:, :, ::2, 1::2].flatten(2),
                        x[:, :, 1::2, 1::2].transpose(2, 3).flatten(2)], dim=1)


@lru_cache(maxsize=16)
def interleaved_positions(h: int, w: int) -> np.ndarray:
    """(4, h/2 * w/2): where each position of each `interleaved_scan` sequence lies in the flattened (h, w) image."""
    return interleaved_scan(torch.arange(h * w).view(1, 1, h, w))[0, :, 0].numpy()


def interleaved_merge(ys: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of interleaved_scan: (B, 4, C, h/2 * w/2) -> (B, C, h, w)."""
    b, _, c, _ = ys.shape
    h2, w2 = h // 2, w // 2
    g00 = ys[:, 0].reshape(b, c, h2, w2)
    g10 = ys[:, 1].reshape(b, c, w2, h2).transpose(2, 3)
    g01 = ys[:, 2].reshape(b, c, h2, w2)
    g11 = ys[:, 3].reshape(b, c, w2, h2).transpose(2, 3)
    grid = torch.stack([g00, g01, g10, g11], dim=-1).reshape(b, c, h2, w2, 2, 2)
    return grid.permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w)


class SS2D(nn.Module):
    def __init__(self, d_model: int, d_state: int = 16, expand: float = 2.0, d_conv: int = 3,
                 context_dim: int = 256, dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4):
        super().__init__()
        d_inner = int(expand * d_model)
        self.d_inner, self.d_state = d_inner, d_state
        self.dt_rank = math.ceil(d_model / 16)
        k = K_DIRECTIONS
        self.in_proj = nn.Linear(d_model, d_inner * 2, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner)
        self.x_proj_weight = nn.Parameter(torch.empty(k, self.dt_rank + 2 * d_state, d_inner))
        bound = d_inner ** -0.5
        nn.init.uniform_(self.x_proj_weight, -bound, bound)
        std = self.dt_rank ** -0.5
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, self.dt_rank).uniform_(-std, std))
        dt = torch.exp(torch.rand(k, d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_projs_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(k * d_inner, 1)
        self.A_logs = nn.Parameter(torch.log(a))  # S4D-real init, (K*d_inner, N)
        self.Ds = nn.Parameter(torch.ones(k * d_inner))
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        self.attn = nn.Sequential(nn.Linear(context_dim, d_inner, bias=False), nn.SiLU())  # anatomy injection
        self.scan_backend = "auto"  # "torch", "numba" or "mamba" to force one (same parameters for all)

    def scan(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d_inner, H, W) -> (B, H, W, d_inner)."""
        b, d, h, w = x.shape
        ph, pw = h % 2, w % 2
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        hp, wp = x.shape[-2:]
        backend = resolve_backend(self.scan_backend, x)
        if backend == "numba" and not needs_grad(x, self.x_proj_weight):
            y = self._scan_in_place(x)
        else:
            xs = interleaved_scan(x)  # (b, k, d, l)
            x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
            dts, bs, cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
            dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
            length = xs.shape[-1]
            ys = selective_scan(xs.reshape(b, -1, length), dts.reshape(b, -1, length), -torch.exp(self.A_logs.float()),
                                bs.contiguous(), cs.contiguous(), self.Ds.float(),
                                self.dt_projs_bias.reshape(-1).float(), delta_softplus=True, backend=backend)
            y = interleaved_merge(ys.reshape(b, K_DIRECTIONS, d, length), hp, wp).permute(0, 2, 3, 1)
        return self.out_norm(y[:, :h, :w])

    def _scan_in_place(self, x: torch.Tensor) -> torch.Tensor:
        """The CPU inference path: each sub-grid's projections are computed on the channels-last feature map where
        it lies, and the numba scan reads and writes its positions there (`scan_rows`): the same arithmetic as the
        torch path without copying any sequence out of the image or merging one back."""
        b, d, hp, wp = x.shape
        n, r = self.d_state, self.dt_rank
        image = x.permute(0, 2, 3, 1).contiguous()  # (b, hp, wp, d): no copy when x is channels-last already
        delta, bs, cs = torch.empty_like(image), image.new_empty(b, hp, wp, n), image.new_empty(b, hp, wp, n)
        cells = lambda t: t.view(b, hp // 2, 2, wp // 2, 2, t.shape[-1])  # noqa: E731 - (row, parity, col, parity)
        for k, (i, j) in enumerate(SUBGRID_PARITIES):
            proj = cells(image)[:, :, i, :, j] @ self.x_proj_weight[k].t()  # (b, hp/2, wp/2, r + 2n)
            cells(delta)[:, :, i, :, j] = F.softplus(proj[..., :r] @ self.dt_projs_weight[k].t() + self.dt_projs_bias[k])
            cells(bs)[:, :, i, :, j] = proj[..., r:r + n]
            cells(cs)[:, :, i, :, j] = proj[..., r + n:]
        shared = lambda t: t.view(b, hp * wp, 1, -1)  # noqa: E731 - every sub-grid reads all channels of its rows
        y = scan_rows(shared(image), shared(delta), -torch.exp(self.A_logs.float()), shared(bs), shared(cs),
                      self.Ds.float(), interleaved_positions(hp, wp))
        return y.view(b, hp, wp, d)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) channels-last; context: (B, context_dim) anatomy embedding."""
        x, z = (F.linear(x, w) for w in self.in_proj.weight.chunk(2))  # in_proj, its halves apart (contiguous)
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2)))
        y = self.scan(x) * F.silu(z)
        local = self.attn(context)[:, None, None, :]
        return self.out_proj(y) + self.out_proj(local)  # = out_proj(y + local): the offset projected once per image
