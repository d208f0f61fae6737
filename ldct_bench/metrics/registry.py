"""The metric registry: name -> function of unit-range batches, with its direction.

Add a metric in a few lines:

    from ldct_bench.metrics import register_metric

    @register_metric("mae", higher_is_better=False, unit="HU")
    def mae(pair):  # pair.pu / pair.ru: the batch mapped to [0, 1] through pair.window
        return (pair.pu - pair.ru).abs().flatten(1).mean(1) * pair.window.width
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from . import fidelity
from .fidelity import WindowedPair

MetricFn = Callable[[WindowedPair], torch.Tensor]  # -> (N,) scores


@dataclass(frozen=True)
class Metric:
    name: str
    fn: MetricFn
    higher_is_better: bool
    unit: str = ""
    source: str = "ldct-bench"
    min_size: int = 7
    needs_rgb: bool = False
    default: bool = True  # part of the default metric set scored by `run`
    unavailable: str = ""  # non-empty: why it cannot be computed here


METRICS: dict[str, Metric] = {}


def register_metric(name: str, higher_is_better: bool, unit: str = "", source: str = "ldct-bench",
                    min_size: int = 7, needs_rgb: bool = False, default: bool = True):
    def deco(fn: MetricFn) -> MetricFn:
        METRICS[name] = Metric(name, fn, higher_is_better, unit, source, min_size, needs_rgb, default)
        return fn

    return deco


def get_metric(name: str) -> Metric:
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; available: {', '.join(METRICS)}.")
    m = METRICS[name]
    if m.unavailable:
        raise ValueError(f"metric {name!r} is unavailable here: {m.unavailable}")
    return m


# -- fidelity (our vectorised engine) ----------------------------------------------------------------
@register_metric("rmse", higher_is_better=False, unit="HU")
def _rmse(pair):
    return fidelity.rmse_hu(pair.mse(), pair.window)


@register_metric("psnr", higher_is_better=True, unit="dB")
def _psnr(pair):
    return fidelity.psnr(pair.mse())


@register_metric("ssim", higher_is_better=True, min_size=11)
def _ssim(pair):
    return pair.ssim("gaussian")


@register_metric("ssim_uniform", higher_is_better=True, default=False)
def _ssim_uniform(pair):
    return pair.ssim("uniform")


# -- perceptual / structural, straight from piq (single-channel, offline) -----------------------------
PIQ_CHUNK = 8  # slices per piq call: bounds the memory of its multi-scale filter banks


def _piq(name: str, higher: bool, min_size: int, call: Callable, default: bool = False):
    def fn(pair):
        """In float32: piq's filters run ~15x faster than in float64, and the scores agree to ~1e-6 relative."""
        import piq

        pu, ru = pair.pu.float(), pair.ru.float()
        chunks = range(0, len(pu), PIQ_CHUNK)
        return torch.cat([call(piq, pu[i:i + PIQ_CHUNK], ru[i:i + PIQ_CHUNK]) for i in chunks]).double()

    register_metric(name, higher, source="piq", min_size=min_size, default=default)(fn)


_piq("ms_ssim", True, 161, lambda piq, p, r: piq.multi_scale_ssim(p, r, data_range=1.0, reduction="none"))
_piq("vif", True, 41, lambda piq, p, r: piq.vif_p(p, r, data_range=1.0, reduction="none"))
_piq("fsim", True, 32, lambda piq, p, r: piq.fsim(p, r, data_range=1.0, reduction="none", chromatic=False))
_piq("gmsd", False, 16, lambda piq, p, r: piq.gmsd(p, r, data_range=1.0, reduction="none"))
_piq("haarpsi", True, 32, lambda piq, p, r: piq.haarpsi(p, r, data_range=1.0, reduction="none"))


def _learned(name: str, files: tuple[str, ...]):
    """LPIPS / DISTS need ImageNet-trained weights: usable only from a local torch-hub folder."""
    hub = Path(os.environ.get("LDCT_BENCH_TORCH_HOME", "")) / "hub" / "checkpoints"
    missing = [f for f in files if not (hub / f).is_file()]
    reason = "" if not missing and os.environ.get("LDCT_BENCH_TORCH_HOME") else (
        f"its pretrained weights ({', '.join(files)}) are not on this machine and are never downloaded; "
        "put them in $LDCT_BENCH_TORCH_HOME/hub/checkpoints/ to enable it.")

    def fn(pair):
        os.environ["TORCH_HOME"] = os.environ["LDCT_BENCH_TORCH_HOME"]
        import piq

        model = (piq.LPIPS if name == "lpips" else piq.DISTS)(reduction="none")
        return model(pair.pu.float().repeat(1, 3, 1, 1), pair.ru.float().repeat(1, 3, 1, 1)).double()

    METRICS[name] = Metric(name, fn, False, source="piq", min_size=32, needs_rgb=True, default=False, unavailable=reason)


_learned("lpips", ("vgg16-397923af.pth", "lpips_weights.pt"))
_learned("dists", ("vgg16-397923af.pth", "dists_weights.pt"))

DEFAULT_METRICS = tuple(n for n, m in METRICS.items() if m.default)
