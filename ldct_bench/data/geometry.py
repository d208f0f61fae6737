"""Fan-beam CT geometry with an arc (equi-angular) detector, and the image grid.

Defaults are close to a clinical scanner (Siemens Definition-like: 595 mm source to
isocentre, 1085.6 mm source to detector, 736 channels of 1.2858 mm, 1152 views per
turn), so that simulated noise has a realistic texture and magnitude.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import torch


@dataclass(frozen=True)
class FanBeamGeometry:
    """Everything the projector and FBP need to agree on. Lengths in mm."""

    image_size: int = 256
    fov_mm: float = 350.0
    source_iso_mm: float = 595.0
    source_det_mm: float = 1085.6
    n_channels: int = 736
    det_pitch_mm: float = 1.2858
    n_views: int = 1152

    def __post_init__(self):
        if self.image_size < 8 or self.n_channels < 8 or self.n_views < 8:
            raise ValueError("geometry: image_size, n_channels and n_views must each be at least 8.")
        if self.fov_radius_mm >= self.source_iso_mm:
            raise ValueError("geometry: the field of view must lie inside the source orbit.")
        if self.scan_radius_mm < self.fov_radius_mm:
            raise ValueError(
                f"geometry: the fan covers a {2 * self.scan_radius_mm:.0f} mm circle but the image FOV is "
                f"{self.fov_mm:.0f} mm (diagonal {2 * self.fov_radius_mm:.0f} mm); add channels or reduce fov_mm."
            )

    @classmethod
    def covering(cls, image_size: int, fov_mm: float) -> FanBeamGeometry:
        """The default scanner imaging a square `fov_mm` wide (a real slice's field of view): as many channels as
        it takes for the fan to cover the square's corners (the default's 736 at least)."""
        base = cls()
        half_fan = math.asin(min(0.99, fov_mm / math.sqrt(2) / base.source_iso_mm))
        channels = max(base.n_channels, 2 * math.ceil(half_fan / base.dgamma) + 2)
        return cls(image_size=image_size, fov_mm=fov_mm, n_channels=channels)

    @property
    def pixel_mm(self) -> float:
        return self.fov_mm / self.image_size

    @property
    def fov_radius_mm(self) -> float:
        """Radius of the circle that contains the whole square image."""
        return self.fov_mm / math.sqrt(2.0)

    @property
    def dgamma(self) -> float:
        """Angular pitch of the arc detector, radians."""
        return self.det_pitch_mm / self.source_det_mm

    @property
    def scan_radius_mm(self) -> float:
        """Radius of the circle seen by every view (the fan's half-angle at the isocentre)."""
        half_fan = self.dgamma * (self.n_channels - 1) / 2
        return self.source_iso_mm * math.sin(min(half_fan, math.pi / 2))

    def to_dict(self) -> dict:
        return asdict(self)

    def channel_angles(self, dtype=torch.float64) -> torch.Tensor:
        """Fan angle gamma of each channel; positive is counter-clockwise from the central ray."""
        k = torch.arange(self.n_channels, dtype=dtype)
        return (k - (self.n_channels - 1) / 2) * self.dgamma

    def view_angles(self, dtype=torch.float64) -> torch.Tensor:
        """Source angle beta of each view over one full turn."""
        return torch.arange(self.n_views, dtype=dtype) * (2 * math.pi / self.n_views)

    def pixel_centres(self, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) in mm of every pixel centre, shape (H, W); row 0 is the top (largest y)."""
        n, d = self.image_size, self.pixel_mm
        c = (torch.arange(n, dtype=dtype) - (n - 1) / 2) * d
        y, x = torch.meshgrid(-c, c, indexing="ij")
        return x, y

    def outside_circle(self) -> torch.Tensor:
        """(H, W) True where a pixel's centre lies outside the reconstruction circle, the disc the display field's
        square is drawn round: scanners fill it with a padding value that DICOM import reads as -1024 HU."""
        x, y = self.pixel_centres()
        return torch.hypot(x, y) > self.fov_mm / 2


@lru_cache(maxsize=4)
def ray_lines(geom: FanBeamGeometry, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each ray as a line {p : p . n = t} with unit normal n = (cos theta, sin theta).

    Returns (cos theta, sin theta, t), each (n_views, n_channels). The source sits at
    D(cos b, sin b) and ray (b, g) travels along -(cos(b+g), sin(b+g)). Computed once per geometry (every phantom
    slice's sinogram needs them, and they cost a third of it) and shared: read them, do not write them.
    """
    beta = geom.view_angles(dtype)[:, None]
    gamma = geom.channel_angles(dtype)[None, :]
    theta = beta + gamma + math.pi / 2  # normal to the ray direction
    cos_t, sin_t = torch.cos(theta), torch.sin(theta)
    t = geom.source_iso_mm * (torch.cos(beta) * cos_t + torch.sin(beta) * sin_t)
    return cos_t, sin_t, t
