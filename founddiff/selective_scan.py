"""The selective scan of Mamba (S6), with mamba-ssm's signature and parameter layout.

    delta = softplus(delta + delta_bias)
    h_t   = exp(delta_t A) * h_{t-1} + delta_t * B_t * u_t
    y_t   = <C_t, h_t> + D * u_t

u, delta: (batch, channels, L); A: (channels, N); B, C: (batch, groups, N, L) with the
channels split evenly among groups (SS2D uses one group per scan direction); D,
delta_bias: (channels,).

`selective_scan` uses mamba-ssm's fused CUDA kernel when it is importable and the inputs
are on CUDA; on the CPU numba kernels: for inference one sequential pass, parallel over
channels (the scan is memory-bound and this touches each element once), for training a
forward pass that keeps its states and a backward pass of the adjoint recurrence
(`_NumbaScan`); otherwise (CUDA without mamba-ssm) a pure-PyTorch *parallel* scan
(Hillis-Steele: log2(L) steps of the associative operator (a1, b1) o (a2, b2) =
(a1 a2, a2 b1 + b2); no Python loop over L and only products of numbers in (0, 1], so it
is stable). All read the same tensors, so one checkpoint serves all.
`selective_scan_reference` is the naive sequential recurrence the tests compare against.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import torch
import torch.nn.functional as F


def load_mamba_scan():
    """mamba-ssm's fused selective scan (pip install "ldct-bench[cuda]"), or None where it is not installed.

    Importing it runs mamba-ssm's package __init__, which also imports its language-model code; up to 2.2.6 that code
    is written against transformers < 5 and fails beside a newer one (fixed upstream after 2.2.6, state-spaces/mamba
    #807). The scan does not need it, so when the package import fails the scan's module is imported under a bare
    package instead."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        return selective_scan_fn
    except Exception:  # absent, built without CUDA, or its language-model code failed: tried once more below
        pass
    try:
        spec = importlib.util.find_spec("mamba_ssm")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    for name in [m for m in sys.modules if m == "mamba_ssm" or m.startswith("mamba_ssm.")]:
        del sys.modules[name]  # what the failed import left half-made
    bare = types.ModuleType("mamba_ssm")
    bare.__path__, bare.__spec__ = list(spec.submodule_search_locations), spec
    sys.modules["mamba_ssm"] = bare
    try:
        return importlib.import_module("mamba_ssm.ops.selective_scan_interface").selective_scan_fn
    except Exception:  # the kernel itself is missing or broken: the fallbacks serve
        del sys.modules["mamba_ssm"]
        return None


_mamba_scan = load_mamba_scan()


def mamba_available() -> bool:
    return _mamba_scan is not None and torch.cuda.is_available()


def scan_backend(device: torch.device | str) -> str:
    """The backend `selective_scan(backend="auto")` takes: mamba-ssm's kernel on CUDA where installed, the numba
    kernels on the CPU, the parallel PyTorch scan otherwise."""
    on_cuda = torch.device(device).type == "cuda"
    return "mamba" if (mamba_available() and on_cuda) else "torch" if on_cuda else "numba"


def resolve_backend(backend: str, u: torch.Tensor) -> str:
    """`backend`, or for "auto" the one `scan_backend` picks for the scan's inputs' device."""
    return scan_backend(u.device) if backend == "auto" else backend


def needs_grad(*tensors) -> bool:
    """Whether autograd must flow through any of `tensors` here (the numba scan then runs its training kernels)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _discretised_step(delta, delta_bias, delta_softplus):
    """The step sizes the recurrence takes: softplus(delta + delta_bias) (either part optional)."""
    if delta_bias is not None:
        delta = delta + delta_bias[None, :, None]
    return F.softplus(delta) if delta_softplus else delta


def _discretise(u, delta, A, B, delta_bias, delta_softplus):
    delta = _discretised_step(delta, delta_bias, delta_softplus)
    b, d, length = u.shape
    g = B.shape[1]
    Bx = B.repeat_interleave(d // g, dim=1)  # (b, d, N, L)
    dA = torch.exp(delta[:, :, None, :] * A[None, :, :, None])  # (b, d, N, L)
    dBu = (delta * u)[:, :, None, :] * Bx
    return dA, dBu


def _readout(h, u, C, D):
    d, g = u.shape[1], C.shape[1]
    y = (h * C.repeat_interleave(d // g, dim=1)).sum(2)
    return y + u * D[None, :, None] if D is not None else y


def selective_scan_torch(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True):
    dt = torch.promote_types(u.dtype, torch.float32)
    u, delta, A, B, C = (t.to(dt) for t in (u, delta, A, B, C))
    dA, h = _discretise(u, delta, A, B, delta_bias, delta_softplus)
    length = u.shape[-1]
    k = 1
    while k < length:
        h = h + dA * F.pad(h[..., :-k], (k, 0))
        dA = dA * F.pad(dA[..., :-k], (k, 0), value=1.0)
        k *= 2
    return _readout(h, u, C, D)


def selective_scan_numba(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True):
    """CPU inference kernel (no autograd); same arguments and result as the others, computed in float32 as
    mamba-ssm's kernel computes. The inputs are put channels-last for `scan_rows`, and the result back."""
    import numpy as np

    nb, nd, nl = u.shape
    groups = B.shape[1]
    delta = _discretised_step(delta, delta_bias, delta_softplus)  # PyTorch's softplus vectorises; libm's does not
    blocks = lambda t: t.transpose(1, 2).reshape(nb, nl, groups, nd // groups)  # noqa: E731 - (b, l, group, its d)
    y = scan_rows(blocks(u), blocks(delta), A, B.permute(0, 3, 1, 2), C.permute(0, 3, 1, 2), D,
                  np.broadcast_to(np.arange(nl), (groups, nl)))
    return y.reshape(nb, nl, nd).transpose(1, 2).to(u.dtype)


def scan_rows(u, delta, A, B, C, D, rows):
    """The selective scan over sequences whose positions are rows of channels-last arrays: group g's position t is
    row rows[g, t] of u and delta (b, P, blocks, d/g; delta already discretised) and of B and C (b, P, blocks, n).
    Group g reads block g of an array that has one per group, or block 0 of one that all groups share; A (d, n) and
    D (d) hold the groups' channels in turn. Returns y (b, P, blocks of u, d/g): each group's outputs in the rows and
    block it read.

    SS2D scans the four interleaved sub-grids of an image straight from its channels-last feature map this way (rows:
    where each sub-grid's positions lie; one shared block), so no sequence is copied out of the image or merged back.
    Channels innermost: the recurrence runs over positions, and at each over all channels of a group at once (a
    contiguous row), so the work is wide and vectorises; parallel over (batch, group)."""
    import numpy as np

    groups = rows.shape[0]
    f32 = [t.detach().to(torch.float32).contiguous().numpy() for t in (u, delta, B, C)]
    per, n = f32[0].shape[-1], f32[2].shape[-1]
    Ag = A.detach().to(torch.float32).reshape(groups, per, n).transpose(1, 2).contiguous().numpy()  # (g, n, d/g)
    Dg = (D.detach().to(torch.float32).reshape(groups, per).numpy() if D is not None
          else np.zeros((groups, per), dtype=np.float32))
    block = lambda t: np.arange(groups) if t.shape[2] == groups else np.zeros(groups, dtype=np.int64)  # noqa: E731
    y = np.zeros_like(f32[0])
    _numba_kernel()(*f32[:2], Ag, *f32[2:], Dg, np.ascontiguousarray(rows, dtype=np.int64), block(f32[0]),
                    block(f32[2]), y)
    return torch.from_numpy(y)


_KERNEL = None


def _numba_kernel():
    global _KERNEL
    if _KERNEL is None:
        import math

        import numba
        import numpy as np

        # exp(x) = 2^k exp(r), k = round(x / ln2), |r| <= ln2 / 2 (ln2 split in two for an exact r): a degree-7
        # Taylor polynomial (relative error < 1e-8, below float32's rounding) times 2^k written into a float32's
        # exponent bits: arithmetic only, which vectorises (libm's exp does not). The decays are exp of non-positive
        # numbers, taken no lower than exp(-87), float32's smallest normal number.
        f32 = np.float32
        taylor = np.array([1.0 / math.factorial(i) for i in range(8)], dtype=np.float32)
        log2e, ln2_hi, ln2_lo = f32(1.0 / math.log(2.0)), f32(0.693145751953125), f32(1.428606765330187e-06)
        floor_x, half = f32(-87.0), f32(0.5)

        @numba.njit(parallel=True, fastmath=True, cache=True)
        def kernel(u, delta, A, B, C, D, rows, channel_block, state_block, y):
            nb = u.shape[0]
            ng, nl = rows.shape
            nn, per = A.shape[1], A.shape[2]
            for job in numba.prange(nb * ng):
                b, g = job // ng, job % ng
                cb, sb, Ag, Dg = channel_block[g], state_block[g], A[g], D[g]
                h = np.zeros((nn, per), dtype=np.float32)
                dl = np.empty(per, dtype=np.float32)
                du = np.empty(per, dtype=np.float32)
                acc = np.empty(per, dtype=np.float32)
                e = np.empty(per, dtype=np.float32)
                scale_bits = np.empty(per, dtype=np.int32)  # 2^k built in its float32 bits: no table to gather from
                scale = scale_bits.view(np.float32)
                for t in range(nl):
                    p = rows[g, t]
                    ut, dt, yt = u[b, p, cb], delta[b, p, cb], y[b, p, cb]  # this position's channels and states
                    bt, ct = B[b, p, sb], C[b, p, sb]
                    for j in range(per):
                        dl[j] = dt[j]
                        du[j] = dl[j] * ut[j]
                        acc[j] = Dg[j] * ut[j]
                    for n in range(nn):
                        bv, cv = bt[n], ct[n]
                        for j in range(per):
                            x = max(dl[j] * Ag[n, j], floor_x)
                            k = np.floor(x * log2e + half)
                            r = (x - k * ln2_hi) - k * ln2_lo
                            poly = taylor[7]
                            for i in range(6, -1, -1):
                                poly = poly * r + taylor[i]
                            e[j] = poly
                            scale_bits[j] = (np.int32(k) + np.int32(127)) << np.int32(23)
                        for j in range(per):
                            h[n, j] = e[j] * scale[j] * h[n, j] + du[j] * bv
                            acc[j] += h[n, j] * cv
                    for j in range(per):
                        yt[j] = acc[j]

        _KERNEL = kernel
    return _KERNEL


class _NumbaScan(torch.autograd.Function):
    """CPU training: the recurrence run once forward, keeping its states (b, d, N, L), and once backward in reverse
    (the adjoint recurrence g_t = C_t gy_t + exp(delta_{t+1} A) g_{t+1}), each a numba kernel in float32 as
    mamba-ssm's CUDA kernels compute. Linear work and one state tensor, where the parallel scan does log2(L) passes and
    keeps each for autograd. `delta` arrives discretised: softplus and bias stay in PyTorch's autograd."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D):
        f32 = [t.detach().to(torch.float32).contiguous() for t in (u, delta, A, B, C, D)]
        nb, nd, nl = u.shape
        h, y = f32[0].new_empty(nb, nd, A.shape[1], nl), torch.empty_like(f32[0])
        _training_kernels()[0](*(t.numpy() for t in f32), h.numpy(), y.numpy())
        ctx.save_for_backward(*f32, h)
        ctx.dtypes = [t.dtype for t in (u, delta, A, B, C, D)]
        return y.to(u.dtype)

    @staticmethod
    def backward(ctx, gy):
        u, delta, A, B, C, D, h = ctx.saved_tensors
        gy = gy.to(torch.float32).contiguous()
        gu, gdelta, gB, gC = (torch.zeros_like(t) for t in (u, delta, B, C))
        gA = u.new_zeros(u.shape[0], *A.shape)  # per batch item: the jobs of different items never share a sum
        _training_kernels()[1](*(t.numpy() for t in (u, delta, A, B, C, h, gy, gu, gdelta, gA, gB, gC)))
        grads = (gu + D[None, :, None] * gy, gdelta, gA.sum(0), gB, gC, (gy * u).sum((0, 2)))
        return tuple(g.to(dt) for g, dt in zip(grads, ctx.dtypes))


def selective_scan_numba_autograd(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True):
    """The CPU training path: same arguments and result as the others, differentiable in every input."""
    delta = _discretised_step(delta, delta_bias, delta_softplus)
    return _NumbaScan.apply(u, delta, A, B, C, D if D is not None else u.new_zeros(u.shape[1]))


_TRAINING_KERNELS = None


def _training_kernels():
    """(forward, backward) numba kernels of `_NumbaScan`, parallel over (batch item, group): a group's B and C
    gradients are summed over its channels inside one job."""
    global _TRAINING_KERNELS
    if _TRAINING_KERNELS is None:
        import math

        import numba
        import numpy as np

        zero = np.float32(0.0)

        @numba.njit(parallel=True, fastmath=True, cache=True)
        def forward(u, delta, A, B, C, D, h, y):
            nb, nd, nl = u.shape
            ng, nn = B.shape[1], B.shape[2]
            per = nd // ng
            for job in numba.prange(nb * ng):
                b, g = job // ng, job % ng
                for c in range(g * per, (g + 1) * per):
                    for t in range(nl):
                        y[b, c, t] = D[c] * u[b, c, t]
                    for n in range(nn):
                        a, s = A[c, n], zero
                        for t in range(nl):
                            d = delta[b, c, t]
                            s = math.exp(d * a) * s + d * u[b, c, t] * B[b, g, n, t]
                            h[b, c, n, t] = s
                            y[b, c, t] += C[b, g, n, t] * s

        @numba.njit(parallel=True, fastmath=True, cache=True)
        def backward(u, delta, A, B, C, h, gy, gu, gdelta, gA, gB, gC):
            nb, nd, nl = u.shape
            ng, nn = B.shape[1], B.shape[2]
            per = nd // ng
            for job in numba.prange(nb * ng):
                b, g = job // ng, job % ng
                for c in range(g * per, (g + 1) * per):
                    for n in range(nn):
                        a, carry, ga_sum = A[c, n], zero, zero
                        for t in range(nl - 1, -1, -1):
                            d, ut, bt = delta[b, c, t], u[b, c, t], B[b, g, n, t]
                            gt = C[b, g, n, t] * gy[b, c, t] + carry  # dL/dh_t
                            gC[b, g, n, t] += gy[b, c, t] * h[b, c, n, t]
                            decay = math.exp(d * a)
                            g_decay = gt * (h[b, c, n, t - 1] if t > 0 else zero) * decay  # through exp(d a)
                            gdelta[b, c, t] += g_decay * a + gt * ut * bt
                            ga_sum += g_decay * d
                            gu[b, c, t] += gt * d * bt
                            gB[b, g, n, t] += gt * d * ut
                            carry = decay * gt
                        gA[b, c, n] = ga_sum

        _TRAINING_KERNELS = (forward, backward)
    return _TRAINING_KERNELS


def selective_scan_reference(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True):
    """Sequential recurrence, one step per position: slow, obviously right."""
    dA, dBu = _discretise(u, delta, A, B, delta_bias, delta_softplus)
    h = torch.zeros_like(dBu[..., 0])
    hs = []
    for t in range(u.shape[-1]):
        h = dA[..., t] * h + dBu[..., t]
        hs.append(h)
    return _readout(torch.stack(hs, -1), u, C, D)


def selective_scan(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True, backend: str = "auto"):
    backend = resolve_backend(backend, u)
    if backend == "numba":
        scan = selective_scan_numba_autograd if needs_grad(u, delta, A, B, C, D, delta_bias) else selective_scan_numba
        return scan(u, delta, A, B, C, D, delta_bias, delta_softplus)
    if backend == "mamba":
        if _mamba_scan is None:
            raise RuntimeError("mamba-ssm is not installed; install the `cuda` extra or use backend='torch'.")
        return _mamba_scan(u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(), C.contiguous(),
                           D, None, delta_bias, delta_softplus)
    return selective_scan_torch(u, delta, A, B, C, D, delta_bias, delta_softplus)
