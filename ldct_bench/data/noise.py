"""Transmission noise of a CT scan at a fraction of the full dose.

Detected counts at dose fraction d:  N ~ Poisson(d * I0 * exp(-p)) + Normal(0, sigma_e^2),
then p_hat = -ln(max(N, n_min) / (d * I0)).  I0 is the unattenuated count per ray at full
dose; sigma_e^2 the electronic-noise variance (in photon units).

A lower dose is made from a scan that already carries full-dose noise (a simulated full-dose
scan, or a real one reprojected) as Yu et al. 2012 do ("Development and validation of a practical
lower-dose-simulation tool", Med. Phys. 39), in the count domain: with N = I0 e^-p the full-dose
counts, N_d = d N + z sqrt((1-d) (d N + (1+d) sigma_e^2)) has the mean and variance of a scan at
dose d (d lambda and d lambda + sigma_e^2) and adds to the full-dose scan only the noise it lacks.
To first order this adds (1-d)/d e^p/I0 (1 + (1+d)/d sigma_e^2 e^p/I0) to the variance of p, and
since N_d is logged like a measurement, the low-count bias of the log is kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class NoiseModel:
    i0: float = 1.0e5
    electronic_var: float = 10.0
    min_counts: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    def transmit(self, p: torch.Tensor, dose: float, generator: torch.Generator) -> torch.Tensor:
        """Noisy line integrals of noiseless line integrals `p` at dose fraction `dose` (0, 1]."""
        check_dose(dose)
        mean = (dose * self.i0) * torch.exp(-p.double())
        counts = torch.poisson(mean, generator=generator)
        if self.electronic_var > 0:
            counts = counts + torch.randn(counts.shape, generator=generator, dtype=counts.dtype) * self.electronic_var**0.5
        counts = counts.clamp(min=self.min_counts)
        return (-torch.log(counts / (dose * self.i0))).to(p.dtype)

    def insert(self, p_full: torch.Tensor, dose: float, generator: torch.Generator) -> torch.Tensor:
        """Yu et al. 2012: lower the dose of full-dose line integrals `p_full` to `dose` (see the module docstring)."""
        return self.insert_draws(p_full, dose, insertion_draws(p_full.shape, dose, generator))

    def insert_draws(self, p_full: torch.Tensor, dose: float, z: torch.Tensor | None) -> torch.Tensor:
        """`insert` given its standard normal draws `z` (`insertion_draws`), which can then be drawn elsewhere: torch's
        samplers run on one core, so a second thread can draw one dose while another is inserted."""
        check_dose(dose)
        if dose == 1.0:
            return p_full.clone()
        counts = self.i0 * torch.exp(-p_full.double())
        var = (1 - dose) * (dose * counts + (1 + dose) * self.electronic_var)
        low = (dose * counts + z * var.clamp(min=0).sqrt()).clamp(min=self.min_counts)
        return (-torch.log(low / (dose * self.i0))).to(p_full.dtype)

    def log_variance(self, p: torch.Tensor, dose: float) -> torch.Tensor:
        """First-order variance of p_hat: (m + sigma_e^2) / m^2 with m = d I0 e^{-p}."""
        m = dose * self.i0 * torch.exp(-p.double())
        return (m + self.electronic_var) / m**2


def insertion_draws(shape, dose: float, generator: torch.Generator) -> torch.Tensor | None:
    """The standard normal draws that `NoiseModel.insert` makes to lower a scan of `shape` to `dose` (none at 1)."""
    check_dose(dose)
    return None if dose == 1.0 else torch.randn(shape, generator=generator, dtype=torch.float64)


def check_dose(dose: float) -> None:
    if not (0.0 < float(dose) <= 1.0):
        raise ValueError(f"dose fraction {dose!r} is outside (0, 1]; give doses as percents 1-100 or fractions like 1/4.")
