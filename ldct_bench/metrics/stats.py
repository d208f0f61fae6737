"""Statistics for tables: mean +- std, patient-level bootstrap CIs, paired tests and ranks.

The unit of independence in CT is the patient: slices of one patient are correlated,
so confidence intervals resample patients (a cluster bootstrap), and the paired test
can be run over per-patient means (`unit="patient"`) when there are enough patients.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

CELL = ["method", "anatomy", "dose", "window", "metric"]


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


def paired_test(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value for paired samples; 1.0 when all differences are zero."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_test: samples differ in length ({a.size} vs {b.size}); they must be paired.")
    d = a - b
    d = d[np.isfinite(d)]
    if d.size == 0 or np.all(d == 0):
        return 1.0
    return float(sps.wilcoxon(d).pvalue)


def compare_to_best(df: pd.DataFrame, higher_is_better: dict[str, bool], unit: str = "slice") -> pd.DataFrame:
    """Per (anatomy, dose, window, metric): each method's mean, rank, and p-value against the best method.

    `df` holds per-slice rows with columns method, anatomy, dose, window, metric, patient, slice, value.
    """
    keys = ["anatomy", "dose", "window", "metric"]
    out = []
    for cell, sub in df.groupby(keys, sort=True, observed=True):
        metric = cell[3]
        hib = higher_is_better.get(metric, True)
        pair_keys = ["patient", "slice"] if unit == "slice" else ["patient"]
        wide = sub.groupby(["method", *pair_keys], observed=True)["value"].mean().unstack("method")
        means = wide.mean()
        order = means.sort_values(ascending=not hib)
        best = order.index[0]
        ranks = means.rank(ascending=not hib, method="min")
        for method in means.index:
            p = 1.0 if method == best else paired_test(wide[method].to_numpy(), wide[best].to_numpy())
            out.append((*cell, method, float(means[method]), int(ranks[method]), best, p))
    return pd.DataFrame(out, columns=[*keys, "method", "mean", "rank", "best", "p_vs_best"])
