"""Task-based image quality: what PSNR misses. Detectability, noise texture and resolution, by the public standards.

- **Channelized Hotelling observer** (LCD_CT, Zeng et al., FDA): Laguerre-Gauss channels (width 2/3 of the disk
  radius in pixels, five channels, as LCD_CT), signal known exactly and location known; each ROI has its mean
  removed; the template w = K^-1 dv is trained on one half of the realisations and tested on the other. d' is the
  test scores' separation, AUC their Mann-Whitney statistic.
- **Noise power spectrum** (AAPM TG-233, Samei et al. 2019): 2-D NPS of uniform ROIs, each realisation minus the
  ensemble mean; its radial average, noise magnitude sqrt(integral), peak and mean frequency.
- **Task transfer function** (TG-233, Richard et al. 2012): circular-edge method on a rod, ESF binned by radial
  distance from the rod's centre, LSF its derivative (tails tapered), TTF = |FT(LSF)| normalised at zero.
Frequencies are in cycles/mm.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.signal.windows import tukey
from scipy.special import eval_laguerre

MIN_CHANNEL_WIDTH_PX = 1.5  # LG channels narrower than this are not sampled by the pixel grid


# ------------------------------------------------------------------------------------------- the observer
def lg_channels(size: int, width_px: float, n: int = 5) -> np.ndarray:
    """Laguerre-Gauss channels (n, size, size) centred on the ROI: u_j(r) = sqrt(2)/a L_j(2 pi r^2/a^2) exp(-pi r^2/a^2)."""
    c = (np.arange(size) - (size - 1) / 2) ** 2
    r2 = c[:, None] + c[None, :]
    x = 2 * math.pi * r2 / width_px**2
    return np.stack([math.sqrt(2) / width_px * eval_laguerre(j, x) * np.exp(-x / 2) for j in range(n)])


def channel_width(radius_px: float) -> float:
    """LCD_CT's channel width for a disk of `radius_px`: 2/3 of its radius (at least MIN_CHANNEL_WIDTH_PX)."""
    return max(2 / 3 * radius_px, MIN_CHANNEL_WIDTH_PX)


def channelize(rois: np.ndarray, channels: np.ndarray) -> np.ndarray:
    """(N, S, S) ROIs -> (N, n) channel outputs, each ROI with its mean removed (a reader does not see the DC level)."""
    rois = rois - rois.mean(axis=(1, 2), keepdims=True)
    return rois.reshape(len(rois), -1) @ channels.reshape(len(channels), -1).T


class Detectability(NamedTuple):
    dprime: float
    auc: float
    dprime_ci: tuple[float, float]
    auc_ci: tuple[float, float]
    n: int  # realisations per class


def hotelling(train_sp: np.ndarray, train_sa: np.ndarray, test_sp: np.ndarray, test_sa: np.ndarray) -> tuple[float, float]:
    """(d', AUC) of the Hotelling template trained on channel outputs train_* and applied to test_*."""
    dv = train_sp.mean(0) - train_sa.mean(0)
    k = (np.cov(train_sp, rowvar=False) + np.cov(train_sa, rowvar=False)) / 2
    w = np.linalg.pinv(np.atleast_2d(k)) @ dv
    t_sp, t_sa = test_sp @ w, test_sa @ w
    dprime = (t_sp.mean() - t_sa.mean()) / math.sqrt((t_sp.var(ddof=1) + t_sa.var(ddof=1)) / 2)
    return float(dprime), auc(t_sp, t_sa)


def auc(t_sp: np.ndarray, t_sa: np.ndarray) -> float:
    """P(t_sp > t_sa) + P(tie)/2: the area under the empirical ROC (Mann-Whitney)."""
    ranks = np.concatenate([t_sp, t_sa]).argsort(kind="stable").argsort() + 1.0  # scores are continuous: no ties
    u = ranks[: len(t_sp)].sum() - len(t_sp) * (len(t_sp) + 1) / 2
    return float(u / (len(t_sp) * len(t_sa)))


def cho(v_sp: np.ndarray, v_sa: np.ndarray, readers: int = 10, n_boot: int = 200, seed: int = 0) -> Detectability:
    """d' and AUC from channel outputs of signal-present and signal-absent realisations (N, n) each.

    The estimate is the mean over `readers` random half splits into training and test (LCD_CT's n_reader); the
    95 % CI is the percentile interval of `n_boot` replicates, each a random split (the template's training
    variability) whose test half is resampled with replacement (the test realisations' sampling variability;
    training and test never share a realisation).
    """
    rng = np.random.default_rng(seed)

    def split():
        a, b = rng.permutation(len(v_sp)), rng.permutation(len(v_sa))
        return a[: len(a) // 2], a[len(a) // 2:], b[: len(b) // 2], b[len(b) // 2:]

    def once(resample: bool):
        parts = split()
        tr_sp, te_sp, tr_sa, te_sa = parts
        if resample:
            te_sp, te_sa = rng.choice(te_sp, len(te_sp)), rng.choice(te_sa, len(te_sa))
        return hotelling(v_sp[tr_sp], v_sa[tr_sa], v_sp[te_sp], v_sa[te_sa])

    point = np.array([once(False) for _ in range(readers)]).mean(0)
    boot = np.array([once(True) for _ in range(n_boot)])
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
    return Detectability(float(point[0]), float(point[1]), (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1])),
                         min(len(v_sp), len(v_sa)))


def crop(images: np.ndarray, row: float, col: float, half: int) -> np.ndarray:
    """(N, 2 half + 1, 2 half + 1) squares of (N, H, W) centred on the pixel nearest (row, col)."""
    r, c = round(row), round(col)
    if r - half < 0 or c - half < 0 or r + half >= images.shape[-2] or c + half >= images.shape[-1]:
        raise ValueError(f"an ROI of {2 * half + 1} px at ({r}, {c}) does not fit in a {images.shape[-2:]} image.")
    return images[..., r - half:r + half + 1, c - half:c + half + 1]


# ----------------------------------------------------------------------------------------- noise texture
class NoisePowerSpectrum(NamedTuple):
    frequency: np.ndarray  # radial frequency bin centres, cycles/mm
    radial: np.ndarray  # radially averaged NPS, HU^2 mm^2
    noise: float  # HU: sqrt of the 2-D NPS integral (the ROIs' standard deviation)
    f_peak: float
    f_mean: float


def nps_2d(rois: np.ndarray, pixel_mm: float, ensemble_mean: np.ndarray | None = None) -> np.ndarray:
    """2-D NPS (S, S), zero frequency centred, of realisations (N, S, S) of one uniform region: each minus the
    ensemble mean (given, or estimated from the N, whose loss of a degree of freedom is corrected)."""
    n, s, _ = rois.shape
    mean, dof = (rois.mean(0), n / (n - 1)) if ensemble_mean is None else (ensemble_mean, 1.0)
    spectra = np.abs(np.fft.fft2(rois - mean)) ** 2
    return np.fft.fftshift(spectra.mean(0)) * dof * pixel_mm**2 / (s * s)


def radial_nps(nps: np.ndarray, pixel_mm: float) -> NoisePowerSpectrum:
    """Radial average of a 2-D NPS in rings one frequency sample wide, from zero to the Nyquist frequency."""
    s = nps.shape[0]
    df = 1 / (s * pixel_mm)
    f = np.fft.fftshift(np.fft.fftfreq(s, pixel_mm))
    fr = np.hypot(f[:, None], f[None, :])
    ring = np.rint(fr / df).astype(int)
    keep = ring <= s // 2
    radial = np.bincount(ring[keep], nps[keep]) / np.bincount(ring[keep])
    freq = np.arange(len(radial)) * df
    return NoisePowerSpectrum(freq, radial, float(math.sqrt(nps.sum() * df * df)), float(freq[np.argmax(radial)]),
                              float((freq * radial).sum() / radial.sum()))


# --------------------------------------------------------------------------------------------- resolution
class TaskTransfer(NamedTuple):
    frequency: np.ndarray  # cycles/mm, up to one cycle per pixel (twice the image's Nyquist frequency)
    ttf: np.ndarray
    ttf50: float
    ttf10: float


def ttf_circular_edge(image: np.ndarray, row: float, col: float, radius_px: float, pixel_mm: float,
                      bin_px: float = 0.1, reach_px: float | None = None) -> TaskTransfer:
    """TTF of a rod centred at (row, col) of `image` (an ensemble mean, or one image) by the circular-edge method.

    The ESF is the mean of the pixels in radial bins `bin_px` wide within `reach_px` (default 3/4 of the radius) of
    the edge, empty bins interpolated; the LSF is its derivative, its outer halves tapered (Tukey window).
    """
    reach = 0.75 * radius_px if reach_px is None else reach_px
    rows, cols = np.indices(image.shape)
    r = np.hypot(rows - row, cols - col).ravel()
    near = np.abs(r - radius_px) <= reach + bin_px
    edges = np.arange(radius_px - reach, radius_px + reach + bin_px / 2, bin_px)
    idx = np.digitize(r[near], edges) - 1
    ok = (idx >= 0) & (idx < len(edges) - 1)
    sums = np.bincount(idx[ok], image.ravel()[near][ok], len(edges) - 1)
    counts = np.bincount(idx[ok], minlength=len(edges) - 1)
    centres = (edges[:-1] + edges[1:]) / 2
    esf = np.interp(centres, centres[counts > 0], sums[counts > 0] / counts[counts > 0])
    lsf = np.gradient(esf) * tukey(len(esf), 0.5)  # tapers the noisy tails; a full Hann would narrow the LSF
    n_fft = max(8192, 2 ** math.ceil(math.log2(len(lsf))))
    spectrum = np.abs(np.fft.rfft(lsf, n_fft))
    freq = np.fft.rfftfreq(n_fft, bin_px * pixel_mm)
    keep = freq <= 1 / pixel_mm  # to twice the Nyquist frequency: the binned ESF is oversampled tenfold
    ttf = spectrum[keep] / spectrum[0]
    return TaskTransfer(freq[keep], ttf, crossing(freq[keep], ttf, 0.5), crossing(freq[keep], ttf, 0.1))


def crossing(freq: np.ndarray, curve: np.ndarray, level: float) -> float:
    """The first frequency at which a falling curve reaches `level` (linear interpolation; NaN if it never does)."""
    below = np.flatnonzero(curve <= level)
    if len(below) == 0 or below[0] == 0:
        return float("nan")
    i = below[0]
    f0, f1, c0, c1 = freq[i - 1], freq[i], curve[i - 1], curve[i]
    return float(f0 + (c0 - level) * (f1 - f0) / (c0 - c1))
