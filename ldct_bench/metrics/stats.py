"""Statistics for tables: the patient is the unit.

Slices of one patient are correlated, so a cell's mean comes with a 95 % percentile CI from a
patient-cluster bootstrap (whole patients resampled with replacement), a method is compared with the
cell's best by a paired t-test on per-patient means, and the p-values of one table are Holm-corrected
together (family-wise error 5 % per table). `unit="slice"` gives a Wilcoxon signed-rank test over
slices instead, on request only: it counts correlated slices as independent and overstates
significance.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

CELL = ["method", "anatomy", "dose", "window", "metric"]
UNITS = {"patient": "paired t-test on per-patient means", "slice": "Wilcoxon signed-rank test over slices"}
CI_METHOD = "95 % patient-cluster bootstrap CI (percentile, 2000 resamples)"


def summarize(df: pd.DataFrame, by=CELL) -> pd.DataFrame:
    """mean, std (ddof=1) and n of `value` per group."""
    g = df.groupby(list(by), sort=True, observed=True)["value"]
    return g.agg(mean="mean", std="std", n="count").reset_index()


def bootstrap_ci(values: np.ndarray, groups: np.ndarray, n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile CI of the mean of `values`, resampling whole `groups` (patients) with replacement."""
    values = np.asarray(values, dtype=np.float64)
    groups = np.asarray(groups)
    if values.size == 0:
        raise ValueError("bootstrap_ci: no values.")
    labels, inv = np.unique(groups, return_inverse=True)
    sums = np.bincount(inv, weights=values)
    counts = np.bincount(inv).astype(np.float64)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(labels), size=(n_boot, len(labels)))
    means = sums[pick].sum(1) / counts[pick].sum(1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def paired_test(a: np.ndarray, b: np.ndarray, unit: str = "patient") -> float:
    """Two-sided p-value for paired samples: a paired t-test (per-patient means) or, for unit="slice", the
    Wilcoxon signed-rank test. 1.0 when all differences are zero; NaN with fewer than two pairs (no test)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_test: samples differ in length ({a.size} vs {b.size}); they must be paired.")
    d = a - b
    d = d[np.isfinite(d)]
    if d.size and np.all(d == 0):
        return 1.0
    if d.size < 2:
        return float("nan")
    if unit == "slice":
        return float(sps.wilcoxon(d).pvalue)
    if np.all(d == d[0]):
        return 0.0  # the same non-zero difference for every patient: no spread left to doubt it
    return float(sps.ttest_1samp(d, 0.0).pvalue)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN entries are not tests and stay NaN)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order])) if m else np.array([])
    out[order] = adjusted
    return out


def compare_to_best(df: pd.DataFrame, higher_is_better: dict[str, bool], unit: str = "patient") -> pd.DataFrame:
    """Per (anatomy, dose, window, metric): each method's mean with its patient-cluster bootstrap CI, the number of
    patients, its rank, and the (uncorrected) p-value of the paired test against the best method. A method whose
    scores are NaN has NaN for mean, CI and rank (it ranks below none).

    `df` holds per-slice rows with columns method, anatomy, dose, window, metric, patient, slice, value.
    """
    if unit not in UNITS:
        raise ValueError(f"unknown statistical unit {unit!r}; choose {' or '.join(UNITS)}.")
    keys = ["anatomy", "dose", "window", "metric"]
    out = []
    for cell, sub in df.groupby(keys, sort=True, observed=True):
        hib = higher_is_better.get(cell[3], True)
        pair_keys = ["patient", "slice"] if unit == "slice" else ["patient"]
        wide = sub.groupby(["method", *pair_keys], observed=True)["value"].mean().unstack("method")
        means = sub.groupby("method", observed=True)["value"].mean()
        best = means.sort_values(ascending=not hib).index[0]
        ranks = means.rank(ascending=not hib, method="min")
        for method, rows in sub.groupby("method", observed=True):
            lo, hi = bootstrap_ci(rows["value"].to_numpy(), rows["patient"].to_numpy())
            p = 1.0 if method == best else paired_test(wide[method].to_numpy(), wide[best].to_numpy(), unit)
            out.append((*cell, method, float(means[method]), lo, hi, rows["patient"].nunique(), float(ranks[method]),
                        best, p))
    return pd.DataFrame(out, columns=[*keys, "method", "mean", "ci_lo", "ci_hi", "n_patients", "rank", "best",
                                      "p_vs_best"])
