"""One simulator for every source: noiseless line integrals -> noisy counts -> FBP -> HU.

Lower doses are nested in the full dose, as in the Mayo data (whose quarter dose is the full-dose
scan plus inserted noise): the full-dose scan is one noisy draw, and every lower dose adds to *its*
line integrals only the variance the lower dose lacks (Yu et al. 2012), so
Var(LD - FD) = sigma_FD^2 (1/d - 1) rather than the sigma_FD^2 (1/d + 1) of independent draws.
Phantoms give exact (analytic) line integrals and the noiseless reconstruction as a truth;
real full-dose images are reprojected first.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from .fbp import fbp
from .geometry import FanBeamGeometry
from .noise import NoiseModel, check_dose, insertion_draws
from .projector import hu_to_mu, mu_to_hu, project_image


@dataclass(frozen=True)
class Simulator:
    geometry: FanBeamGeometry = field(default_factory=FanBeamGeometry)
    noise: NoiseModel = field(default_factory=NoiseModel)
    filter_window: str = "hann"  # the FBP ramp filter's apodisation
    filter_cutoff: float = 1.0  # where the apodised ramp ends, as a fraction of Nyquist (a smooth kernel's is below 1)

    def to_dict(self) -> dict:
        """The simulator as its dataset's config records it (and hashes it): a full-band ramp's cut-off is left out,
        so the datasets made before kernels had one keep their folders and the checkpoints keyed by them."""
        out = {"geometry": self.geometry.to_dict(), "noise": self.noise.to_dict(), "filter_window": self.filter_window}
        return out if self.filter_cutoff == 1.0 else {**out, "filter_cutoff": self.filter_cutoff}

    @classmethod
    def from_dict(cls, d: dict) -> Simulator:
        """Also reads the manifests of caches written before the apodisation was called `filter_window`."""
        return cls(FanBeamGeometry(**d["geometry"]), NoiseModel(**d["noise"]), d.get("filter_window", d.get("window")),
                   float(d.get("filter_cutoff", 1.0)))

    def reconstruct(self, line_integrals: torch.Tensor) -> torch.Tensor:
        """(B, V, C) line integrals -> (B, H, W) HU."""
        return mu_to_hu(fbp(self.geometry, line_integrals.float(), self.filter_window, cutoff=self.filter_cutoff))

    def scan(self, p: torch.Tensor, full_seed: int, doses: list[float], seeds: list[int]) -> torch.Tensor:
        """Noiseless line integrals (V, C) scanned at full dose (noise from `full_seed`), each lower dose made from
        that scan by noise insertion (noise from its own seed) -> (len(doses), H, W) HU; dose 1 is the scan itself."""
        return self.reconstruct(self.noisy(p, full_seed, doses, seeds))

    def noisy(self, p: torch.Tensor, full_seed: int, doses: list[float], seeds: list[int]) -> torch.Tensor:
        """The line integrals `scan` reconstructs: (len(doses), V, C) float32."""
        return self._insert_doses(lambda: self.noise.transmit(p, 1.0, generator(full_seed)), doses, seeds)[1]

    def lower_dose(self, full_dose_hu: torch.Tensor, doses: list[float], seeds: list[int],
                   line_integrals: torch.Tensor | None = None) -> torch.Tensor:
        """Real full-dose image (H, W) HU -> (len(doses), H, W) HU at lower doses (Yu et al. 2012).

        The image is reprojected (or its `line_integrals` given: one image lowered at several fluxes), noise of the
        dose difference is added to the line integrals, and the result reconstructed; the reconstruction error
        of reprojection itself is cancelled by adding back (image - FBP(reprojection)).
        """
        p, noisy = self._insert_doses(lambda: self.reproject(full_dose_hu) if line_integrals is None
                                      else line_integrals, doses, seeds)
        base, *low = self.reconstruct(torch.cat([p[None].float(), noisy]))  # one back-projection serves all
        return torch.stack(low) - base + full_dose_hu.float()

    def reproject(self, hu: torch.Tensor) -> torch.Tensor:
        """The line integrals (V, C) float64 of an image (H, W) HU, air below -1000 HU clipped; of images (B, H, W):
        (B, V, C), each the same as alone."""
        mu = hu_to_mu(hu.double().clamp(min=-1000.0))
        return project_image(self.geometry, mu.float()).double()[0 if hu.dim() == 2 else slice(None)]

    def _insert_doses(self, full_scan, doses: list[float], seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """`full_scan()`'s full-dose line integrals (V, C), and each dose made from them by noise insertion (noise from
        its own seed): (len(doses), V, C) float32, which `reconstruct` takes them to. Each dose draws from its own
        generator, so its draws are made on a second thread while the full-dose scan is made (torch's samplers run
        on one core): the values of drawing them in turn, sooner."""
        shape = (self.geometry.n_views, self.geometry.n_channels)
        with ThreadPoolExecutor(1) as pool:
            draws = [pool.submit(insertion_draws, shape, d, generator(s)) for d, s in zip(doses, seeds)]
            full = full_scan()
            return full, torch.stack([self.noise.insert_draws(full, d, z.result()).float()
                                      for d, z in zip(doses, draws)])


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def noise_seed(*keys) -> int:
    """A stable 63-bit seed from any tuple of ints/strings (dataset seed, anatomy, patient, slice, dose)."""
    ints = [k if isinstance(k, int) else int.from_bytes(str(k).encode()[:16].ljust(16, b"\0"), "little") % (2**63)
            for k in keys]
    return int(np.random.SeedSequence(ints).generate_state(1, dtype=np.uint64)[0] >> 1)


def dose_key(dose: float) -> str:
    """File-safe name of a dose fraction, e.g. 0.25 -> 'd0.2500'."""
    check_dose(dose)
    return f"d{dose:.4f}"


def key_dose(key: str) -> float:
    """The dose fraction an array key names: 'full' -> 1.0, 'd0.2500' -> 0.25 (the inverse of dose_key)."""
    return 1.0 if key == "full" else float(key[1:])
