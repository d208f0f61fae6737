"""How anatomy looks, measured the same way on a phantom and on real CT: the slope of the radial power spectrum
(P(f) ~ f^-beta) inside soft tissue and over the body, the HU histogram of each tissue class, the distribution of
the gradient magnitude (edge sharpness) and the fine-scale fluctuation of soft tissue (mostly the scan's noise).
scripts/realism.py compares the phantoms with real slices by these.

Every measure is in physical units (cycles/mm, HU/mm), so images of any pixel size compare. Soft-tissue ROIs are
square tiles (ROI_MM wide) every pixel of which lies in soft tissue; the spectral slope is fitted on log-log axes
over BAND cycles/mm, below where a full-dose scan's quantum noise takes over.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.transform import rescale

ROI_MM = 40.0
BAND = (0.05, 0.25)  # cycles/mm
# tissue classes by HU (ICRU-style ranges; a pixel belongs to the first that holds it)
CLASSES = {"lung": (-950.0, -500.0), "fat": (-200.0, -40.0), "soft": (-40.0, 150.0), "bone": (300.0, 3000.0)}
SOFT = (-150.0, 150.0)  # what a soft-tissue ROI may hold (fat-muscle mixtures included)
# the levels the phantom heads model: the cerebrum, where the head's section is at least AREA_SHARE of its widest (a
# phantom head narrows as k = 1 - z^2/4, and its slices keep |z| <= 0.62: sections above 82 % of the widest) and
# below AIR_SHARE of it is air (under -500 HU): no paranasal sinus or mastoid air cells, which lie lower
AREA_SHARE, AIR_SHARE = 0.8, 0.005
FINE_GRID_MM, FINE_SIGMA_MM = 1.0, 2.0  # fine_sd: soft tissue on a 1 mm grid less its 2 mm Gaussian blur


def body_mask(image: np.ndarray) -> np.ndarray:
    """The largest connected region above -500 HU, holes filled (the patient, not the table or the air)."""
    labels, n = ndimage.label(image > -500)
    if n == 0:
        return np.zeros(image.shape, dtype=bool)
    largest = 1 + int(np.argmax(ndimage.sum_labels(np.ones_like(image), labels, range(1, n + 1))))
    return ndimage.binary_fill_holes(labels == largest)


def cerebral_levels(volume: np.ndarray) -> list[int]:
    """The axial slices of a head volume at the levels the phantom heads model: above the highest slice with air
    cells (AIR_SHARE: the paranasal sinuses and mastoid mark the skull base), towards the vertex (the end whose
    section is smaller), the first run of slices whose section is at least AREA_SHARE of the widest. A like-for-like
    set: a skull-base slice's muscles, fat, sinuses and petrous bone widen its soft-tissue histogram and change its
    spectrum, and the phantom heads have none of them. Empty when the volume holds no such slice."""
    masks = [body_mask(im) for im in volume]
    areas = np.array([m.sum() for m in masks], dtype=float)
    air = np.array([((im < -500) & m).sum() / max(m.sum(), 1) for im, m in zip(volume, masks)])
    order = list(range(len(volume)))
    if areas[0] < areas[-1]:  # the vertex is the first slice: walk from the skull base up all the same
        order.reverse()
    with_air = [k for k, i in enumerate(order) if air[i] >= AIR_SHARE]
    wide = areas >= AREA_SHARE * areas.max()
    levels = []
    for i in order[with_air[-1] + 1 if with_air else 0:]:
        if levels and not wide[i]:
            break
        if wide[i]:
            levels.append(i)
    return sorted(levels)


def radial_power(image: np.ndarray, pixel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies in cycles/mm, radially averaged power) of a mean-removed, Hann-windowed image."""
    h, w = image.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    spectrum = np.abs(np.fft.fft2((image - image.mean()) * window)) ** 2
    fy, fx = np.fft.fftfreq(h, pixel_mm), np.fft.fftfreq(w, pixel_mm)
    radial = np.hypot(fy[:, None], fx[None, :]).ravel()
    step = 1.0 / (max(h, w) * pixel_mm)
    idx = np.round(radial / step).astype(int)
    counts = np.bincount(idx)
    power = np.bincount(idx, spectrum.ravel()) / np.maximum(counts, 1)
    return np.arange(len(power)) * step, power


def spectral_slope(images: list[np.ndarray], pixel_mm: float, band=BAND) -> float:
    """beta of P(f) ~ f^-beta: the negated log-log slope of the mean radial power of `images` over `band`."""
    grid = np.geomspace(band[0], band[1], 16)
    curves = [radial_power(im, pixel_mm) for im in images]
    curves = [np.interp(grid, f, p / max(p[1:].sum(), 1e-30)) for f, p in curves if f[1] <= band[0]]  # each its shape
    if not curves:
        return float("nan")
    power = np.mean(curves, axis=0)
    return float(-np.polyfit(np.log(grid), np.log(np.maximum(power, 1e-30)), 1)[0])


def soft_tissue_rois(image: np.ndarray, pixel_mm: float, size_mm: float = ROI_MM) -> list[np.ndarray]:
    """Non-overlapping square tiles, `size_mm` wide, wholly in soft tissue (SOFT)."""
    k = max(8, int(round(size_mm / pixel_mm)))
    inside = (image >= SOFT[0]) & (image <= SOFT[1])
    rois = []
    for r in range(0, image.shape[0] - k + 1, k):
        for c in range(0, image.shape[1] - k + 1, k):
            if inside[r:r + k, c:c + k].all():
                rois.append(image[r:r + k, c:c + k])
    return rois


def tissue_histograms(image: np.ndarray, mask: np.ndarray) -> dict[str, dict[str, float]]:
    """Per tissue class inside `mask`: its share of the body, its mean and its spread (std, 5-95 % range) in HU."""
    values = image[mask]
    out = {}
    for name, (lo, hi) in CLASSES.items():
        v = values[(values >= lo) & (values < hi)]
        if len(v) >= 20:
            p5, p95 = np.percentile(v, [5, 95])
            out[name] = {"fraction": len(v) / len(values), "mean": float(v.mean()), "std": float(v.std()),
                         "p5": float(p5), "p95": float(p95)}
    return out


def gradient_percentiles(image: np.ndarray, pixel_mm: float, mask: np.ndarray) -> dict[str, float]:
    """Percentiles 50, 90 and 99 of the gradient magnitude (HU/mm) inside `mask` (eroded, so the skin's edge is out)."""
    gy, gx = np.gradient(image.astype(np.float64), pixel_mm)
    inner = ndimage.binary_erosion(mask, iterations=max(1, int(round(3.0 / pixel_mm))))
    g = np.hypot(gx, gy)[inner]
    if g.size == 0:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan")}
    p50, p90, p99 = np.percentile(g, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99)}


def fine_sd(image: np.ndarray, pixel_mm: float, mask: np.ndarray) -> float:
    """The standard deviation (HU) of soft tissue's fine scale: the image on a FINE_GRID_MM grid (anti-aliased, so
    every pixel size compares) less its FINE_SIGMA_MM Gaussian blur, in soft tissue 3 sigma in from any other class.
    On a scan it is mostly the quantum noise (a noiseless phantom head's is 3 HU), so it compares a phantom's
    full-dose noise with a real scan's."""
    scale = pixel_mm / FINE_GRID_MM
    grid = rescale(image.astype(np.float64), scale, order=1, anti_aliasing=scale < 1, preserve_range=True)
    inside = rescale(mask.astype(np.float64), scale, order=0, preserve_range=True) > 0.5
    lo, hi = CLASSES["soft"]
    smooth = ndimage.gaussian_filter(grid, FINE_SIGMA_MM / FINE_GRID_MM)
    # 3 sigma in from any other class, so that no edge's blur leaks in (at 1.5 sigma a skull's 1000 HU leaks ~2 HU)
    soft = ndimage.binary_erosion(inside & (smooth >= lo) & (smooth < hi),
                                  iterations=round(3 * FINE_SIGMA_MM / FINE_GRID_MM))
    return float((grid - smooth)[soft].std()) if soft.sum() >= 100 else float("nan")


def measure(images: list[np.ndarray], pixel_mm: float) -> dict:
    """Every realism measure of a set of slices of one pixel size: beta in soft tissue (over all its ROIs) and over
    the body (each slice's body bounding box, outside the body set to -1000), tissue histograms and gradients (over
    all slices' bodies)."""
    rois = [r for im in images for r in soft_tissue_rois(im, pixel_mm)]
    bodies, masks = [], []
    for im in images:
        mask = body_mask(im)
        masks.append(mask)
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if len(rows) and len(cols):
            bodies.append(np.where(mask, im, -1000.0)[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])
    stacked, stacked_mask = np.concatenate([im.ravel() for im in images]), np.concatenate([m.ravel() for m in masks])
    grads = [gradient_percentiles(im, pixel_mm, m) for im, m in zip(images, masks)]
    fine = [fine_sd(im, pixel_mm, m) for im, m in zip(images, masks)]
    return {"pixel_mm": pixel_mm, "slices": len(images), "soft_rois": len(rois),
            "beta_soft": spectral_slope(rois, pixel_mm) if rois else float("nan"),
            "beta_body": spectral_slope(bodies, pixel_mm) if bodies else float("nan"),
            "tissues": tissue_histograms(stacked, stacked_mask),
            "gradient": {k: float(np.nanmean([g[k] for g in grads])) for k in ("p50", "p90", "p99")},
            "fine_sd": float(np.nanmean(fine)) if np.isfinite(fine).any() else float("nan")}
