"""DA-Diff: FoundDiff's dose- and anatomy-aware residual diffusion (stage 2).

Residual diffusion (RDDM, Liu et al. 2024, as configured in the FoundDiff release):
  x_t = x_0 + abar_t (I_in - x_0) + bbar_t eps,  with abar_t = 1 - sqrt(gamma_t),
  bbar_t = sqrt(1 - gamma_t), gamma_t = prod(1 - beta) over a 1000-step linear beta schedule
  (1e-4 .. 0.02). The network predicts the residual I_in - x_0 (``pred_res``), MSE loss; the
  LDCT image is concatenated as the input condition. Sampling is deterministic DDIM-style
  over very few steps (default 2), starting from I_in + sqrt(0.01) eps with a fixed seed.

U-Net (dim 64, mults 1/2/4/8 in the paper profile): each level runs a DACB, then a ResNet
block, then a down/up-sampler. The DA-CLIP dose embedding passes an MLP + softmax-weighted
learned prompt and is added to the timestep embedding; the DACB takes shift/scale/gate from
that (adaLN-Zero, zero-initialised), runs SS2D (into which the anatomy embedding is injected)
and then transposed (channel) attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ldct_bench.toolkit import SinusoidalPosEmb, zero_init

from .ss2d import SS2D


class WeightStandardizedConv2d(nn.Conv2d):
    def forward(self, x):
        eps = 1e-5 if x.dtype == torch.float32 else 1e-3
        w = self.weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        return F.conv2d(x, (w - mean) * (var + eps).rsqrt(), self.bias, self.stride, self.padding)


class ResnetBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, groups: int = 8):
        super().__init__()
        self.proj = WeightStandardizedConv2d(dim, dim_out, 3, padding=1)
        self.norm = nn.GroupNorm(groups, dim_out)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x):
        return F.silu(self.norm(self.proj(x))) + self.res_conv(x)


class TransposedAttention(nn.Module):
    """Restormer's multi-Dconv-head transposed attention: attention across channels."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x):
        """Either memory layout; a channels-last input gets a channels-last output, with no transposed copy."""
        b, c, h, w = x.shape
        qkv = self.qkv_dwconv(self.qkv(x))
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w) for t in qkv.chunk(3, dim=1))
        # cosine similarity of q's and k's channels over the image: the norms divide the product (rather than
        # normalising q and k first), and come from the same matrix products, which read either layout in place
        nq, nk = (torch.diagonal(t @ t.transpose(-2, -1), dim1=-2, dim2=-1).sqrt().clamp_min(1e-12) for t in (q, k))
        attn = (q @ k.transpose(-2, -1) / (nq[..., :, None] * nk[..., None, :]) * self.temperature).softmax(-1)
        mix = attn.new_zeros(b, c, c)  # the heads' channel mixing as one block-diagonal matrix, so that it applies
        per = c // self.heads          # to the map in its own layout
        for i in range(self.heads):
            mix[:, i * per:(i + 1) * per, i * per:(i + 1) * per] = attn[:, i]
        v = v.reshape(b, c, h * w)
        if qkv.is_contiguous(memory_format=torch.channels_last) and not qkv.is_contiguous():
            return self.project_out((v.transpose(1, 2) @ mix.transpose(1, 2)).view(b, h, w, c).permute(0, 3, 1, 2))
        return self.project_out((mix @ v).view(b, c, h, w))


class DACB(nn.Module):
    """Dose and anatomy conditional block: adaLN-Zero(time+dose) -> SS2D(+anatomy) -> channel attention."""

    def __init__(self, dim: int, d_state: int, cond_dim: int, anatomy_dim: int, expand: float = 2.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mamba = SS2D(dim, d_state, expand, context_dim=anatomy_dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn_blk = TransposedAttention(dim, max(1, dim // 32))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 6 * dim))
        zero_init(self.adaLN_modulation[-1])

    def forward(self, x, anatomy, cond):
        x = x.permute(0, 2, 3, 1)
        shift1, scale1, gate1, shift2, scale2, gate2 = (t[:, None, None] for t in self.adaLN_modulation(cond).chunk(6, 1))
        # shift + norm * (1 + scale) and x + gate * branch, each as one fused multiply-add over the map
        x = torch.addcmul(x, gate1, self.mamba(torch.addcmul(shift1, self.norm1(x), 1 + scale1), anatomy))
        h = torch.addcmul(shift2, self.norm2(x), 1 + scale2).permute(0, 3, 1, 2)
        x = torch.addcmul(x, gate2, self.attn_blk(h).permute(0, 2, 3, 1))
        return x.permute(0, 3, 1, 2)


class DADiffUNet(nn.Module):
    def __init__(self, dim: int = 64, mults=(1, 2, 4, 8), dose_dim: int = 1024, anatomy_dim: int = 256,
                 base_d_state: int = 4, channels: int = 1):
        super().__init__()
        dims = [dim] + [dim * m for m in mults]
        in_out = list(zip(dims[:-1], dims[1:]))
        tdim = dim * 4
        self.init_conv = nn.Conv2d(channels * 2, dim, 7, padding=3)
        self.time_mlp = nn.Sequential(SinusoidalPosEmb(dim), nn.Linear(dim, tdim), nn.GELU(), nn.Linear(tdim, tdim))
        self.prompt = nn.Parameter(torch.rand(1, tdim))
        self.text_mlp = nn.Sequential(nn.Linear(dose_dim, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.prompt_mlp = nn.Linear(tdim, tdim)
        n = len(in_out)
        self.downs, self.ups = nn.ModuleList(), nn.ModuleList()
        for i, (a, b) in enumerate(in_out):
            last = i == n - 1
            self.downs.append(nn.ModuleList([
                ResnetBlock(a, a), DACB(a, base_d_state * 2 ** i, tdim, anatomy_dim),
                nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(a * 4, b, 1)) if not last else nn.Conv2d(a, b, 3, padding=1)]))
        mid = dims[-1]
        self.mid_block = ResnetBlock(mid, mid)
        self.mid_attn = DACB(mid, base_d_state * 2 ** (n - 1), tdim, anatomy_dim)
        for i, (a, b) in enumerate(reversed(in_out)):
            last = i == n - 1
            self.ups.append(nn.ModuleList([
                ResnetBlock(b + a, b), DACB(b, base_d_state * 2 ** (n - 1 - i), tdim, anatomy_dim),
                nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(b, a, 3, padding=1))
                if not last else nn.Conv2d(b, a, 3, padding=1)]))
        self.final_res_block = ResnetBlock(dim * 2, dim)
        self.final_conv = nn.Conv2d(dim, channels, 1)
        # zero-initialised read-out (as the adaLN-Zero gates): the predicted residual starts at 0, so sampling
        # starts from the low-dose input itself and training can only move it where that helps
        zero_init(self.final_conv)
        self.multiple = 2 ** (n - 1) * 2  # spatial size must divide by this (down-samplers x SS2D sub-grids)

    def condition(self, time, dose_emb):
        t = self.time_mlp(time)
        prompt = torch.softmax(self.text_mlp(dose_emb), dim=1) * self.prompt
        return t + self.prompt_mlp(prompt)

    def forward(self, x, time, dose_emb, anatomy_emb):
        cond = self.condition(time, dose_emb)
        x = self.init_conv(x)
        r = x.clone()
        skips = []
        for res, dacb, down in self.downs:
            x = res(dacb(x, anatomy_emb, cond))
            skips.append(x)
            x = down(x)
        x = self.mid_attn(self.mid_block(x), anatomy_emb, cond)
        for res, dacb, up in self.ups:
            x = up(dacb(res(torch.cat((x, skips.pop()), 1)), anatomy_emb, cond))
        return self.final_conv(self.final_res_block(torch.cat((x, r), 1)))


class ResidualSchedule(nn.Module):
    """RDDM coefficients converted from a linear-beta DDPM schedule (the release's `convert_to_ddim`)."""

    def __init__(self, timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        super().__init__()
        betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
        gamma = torch.cumprod(1 - betas, 0)
        self.timesteps = timesteps
        self.register_buffer("alphas_cumsum", (1 - gamma.sqrt()).float(), persistent=False)
        self.register_buffer("betas_cumsum", (1 - gamma).sqrt().float(), persistent=False)

    def q_sample(self, x0, x_res, t, noise):
        a = self.alphas_cumsum[t].view(-1, 1, 1, 1)
        b = self.betas_cumsum[t].view(-1, 1, 1, 1)
        return x0 + a * x_res + b * noise

    def time_input(self, t):
        """What the network sees as time: abar_t * T (the release's `pred_res` conditioning)."""
        return self.alphas_cumsum[t] * self.timesteps

    def sampling_pairs(self, steps: int) -> list[tuple[int, int]]:
        times = torch.linspace(-1, self.timesteps - 1, steps + 1).int().tolist()[::-1]
        return list(zip(times[:-1], times[1:]))
