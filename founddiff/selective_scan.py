"""The selective scan of Mamba (S6), with mamba-ssm's signature and parameter layout.

    delta = softplus(delta + delta_bias)
    h_t   = exp(delta_t A) * h_{t-1} + delta_t * B_t * u_t
    y_t   = <C_t, h_t> + D * u_t

u, delta: (batch, channels, L); A: (channels, N); B, C: (batch, groups, N, L) with the
channels split evenly among groups (SS2D uses one group per scan direction); D,
delta_bias: (channels,).

`selective_scan` uses mamba-ssm's fused CUDA kernel when it is importable and the inputs
are on CUDA; for gradient-free CPU inference a numba kernel (one sequential pass, parallel
over channels: the scan is memory-bound and this touches each element once); otherwise
(training) a pure-PyTorch *parallel* scan (Hillis-Steele: log2(L) steps of the
associative operator (a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2); no Python loop over L and
only products of numbers in (0, 1], so it is stable). Both read the same tensors, so one
checkpoint serves both. `selective_scan_reference` is the naive sequential recurrence the
tests compare against.
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


def scan_backend(device: torch.device | str, needs_grad: bool) -> str:
    """The backend `selective_scan(backend="auto")` takes: mamba-ssm's kernel on CUDA where installed, the numba kernel
    for CPU inference, the parallel PyTorch scan otherwise."""
    on_cuda = torch.device(device).type == "cuda"
    return "mamba" if (mamba_available() and on_cuda) else "torch" if (needs_grad or on_cuda) else "numba"


def resolve_backend(backend: str, u: torch.Tensor, *others) -> str:
    """`backend`, or for "auto" the one `scan_backend` picks for the scan's inputs: their device, and whether a
    gradient must flow through any of them."""
    if backend != "auto":
        return backend
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (u, *others))
    return scan_backend(u.device, needs_grad)


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


def selective_scan_numba(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True, scatter=None):
    """CPU inference kernel (no autograd); same arguments and result as the others, computed in float32 as
    mamba-ssm's kernel computes.

    Channels innermost: the recurrence runs over positions, and at each position over all channels of a group
    at once, so the work is wide and vectorises; parallel over (batch, group). The inputs are read in their own
    layouts, (b, d, l) and (b, g, n, l): a position's channels are a few cache lines that the next positions reuse,
    so no transposed copies are made.

    scatter: optional (g, l) integer array; then position t of group g is written to row scatter[g, t] of a
    (b, P, d/g) output, its channels last. SS2D passes where each sub-grid's positions lie in the image, and gets
    its output in place and channels-last, which would otherwise take a merge and a transpose."""
    import numpy as np

    nb, nd, nl = u.shape
    delta = _discretised_step(delta, delta_bias, delta_softplus)  # PyTorch's softplus vectorises; libm's does not
    f32 = [t.detach().to(torch.float32).contiguous().numpy() for t in (u, delta, B, C)]
    At = A.detach().to(torch.float32).t().contiguous().numpy()  # state-first (n, d)
    Dn = D.detach().to(torch.float32).numpy() if D is not None else np.zeros(nd, dtype=np.float32)
    groups = B.shape[1]
    if scatter is None:
        dest = (np.arange(groups)[:, None] * nl + np.arange(nl)[None]).astype(np.int64)
        out = np.empty((nb, groups * nl, nd // groups), dtype=np.float32)  # (b, g, l, per): transposed on return
    else:
        dest = np.ascontiguousarray(scatter, dtype=np.int64)
        out = np.empty((nb, int(dest.max()) + 1, nd // groups), dtype=np.float32)
    _numba_kernel()(*f32[:2], At, *f32[2:], Dn, dest, out)
    y = torch.from_numpy(out)
    if scatter is None:
        y = y.view(nb, groups, nl, nd // groups).permute(0, 1, 3, 2).reshape(nb, nd, nl)
    return y.to(u.dtype)


_KERNEL = None


def _numba_kernel():
    global _KERNEL
    if _KERNEL is None:
        import math

        import numba
        import numpy as np

        # exp(x) = 2^k exp(r), k = round(x / ln2), |r| <= ln2 / 2 (ln2 split in two for an exact r): a degree-7
        # Taylor polynomial (relative error < 1e-8, below float32's rounding) and a table of powers of two:
        # arithmetic and a gather, which vectorise (libm's exp does not). The decays are exp of non-positive numbers;
        # below -87 they are under float32's smallest normal number and taken as 0.
        f32 = np.float32
        taylor = np.array([1.0 / math.factorial(i) for i in range(8)], dtype=np.float32)
        pow2 = np.array([2.0 ** k for k in range(-127, 1)], dtype=np.float32)
        pow2[0] = 0.0
        log2e, ln2_hi, ln2_lo = f32(1.0 / math.log(2.0)), f32(0.693145751953125), f32(1.428606765330187e-06)
        floor_x, half = f32(-87.0), f32(0.5)

        @numba.njit(parallel=True, fastmath=True, cache=True)
        def kernel(u, delta, A, B, C, D, dest, y):
            nb, nd, nl = u.shape
            ng, nn = B.shape[1], A.shape[0]
            per = nd // ng
            for job in numba.prange(nb * ng):
                b, g = job // ng, job % ng
                d0 = g * per
                h = np.zeros((nn, per), dtype=np.float32)
                dl = np.empty(per, dtype=np.float32)
                du = np.empty(per, dtype=np.float32)
                acc = np.empty(per, dtype=np.float32)
                for t in range(nl):
                    for j in range(per):
                        dl[j] = delta[b, d0 + j, t]
                        du[j] = dl[j] * u[b, d0 + j, t]
                        acc[j] = D[d0 + j] * u[b, d0 + j, t]
                    for n in range(nn):
                        bv, cv = B[b, g, n, t], C[b, g, n, t]
                        for j in range(per):
                            x = max(dl[j] * A[n, d0 + j], floor_x)
                            k = np.floor(x * log2e + half)
                            r = (x - k * ln2_hi) - k * ln2_lo
                            e = taylor[7]
                            for i in range(6, -1, -1):
                                e = e * r + taylor[i]
                            h[n, j] = e * pow2[int(k) + 127] * h[n, j] + du[j] * bv
                            acc[j] += h[n, j] * cv
                    y[b, dest[g, t], :] = acc

        _KERNEL = kernel
    return _KERNEL


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
    backend = resolve_backend(backend, u, delta, A, B, C, D, delta_bias)
    if backend == "numba":
        return selective_scan_numba(u, delta, A, B, C, D, delta_bias, delta_softplus)
    if backend == "mamba":
        if _mamba_scan is None:
            raise RuntimeError("mamba-ssm is not installed; install the `cuda` extra or use backend='torch'.")
        return _mamba_scan(u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(), C.contiguous(),
                           D, None, delta_bias, delta_softplus)
    return selective_scan_torch(u, delta, A, B, C, D, delta_bias, delta_softplus)
