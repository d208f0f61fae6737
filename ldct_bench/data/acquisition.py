"""Acquisition profiles: the scanner, reconstruction kernel and display field of view an image was made with.

An acquisition is the fourth axis of generalization (beside dose, anatomy and dataset): a denoiser trained on one
scanner's geometry, one kernel and one pixel size meets others in the clinic. Each profile is one frozen record of
what the simulator needs, and `--data embedded@NAME` simulates the phantoms through it.

Sources of the numbers:

* Geometry of the Siemens SOMATOM Definition family (the `default`): 595 mm source to isocentre, 1085.6 mm source to
  detector, 736 channels of 1.2858 mm on the detector arc, 1152 views per turn: the DICOM-CT-PD headers of the
  Siemens scans of TCIA's LDCT-and-Projection-data (Moen et al., "Low-dose CT image and projection dataset",
  Med. Phys. 48(2), 2021).
* Geometry of the GE LightSpeed VCT (`ge`): 541 mm, 949.075 mm, 888 channels of 1.0239 mm, 984 views per turn, as
  reported for the GE scans of the same collection (their DICOM-CT-PD headers).
* Kernels: ramp filters apodised as vendors' smooth, standard and sharp soft-tissue kernels are (Siemens B30f /
  B40f / B50f-like in the ordering of their MTFs): smooth = Hann window cut off at 0.7 of Nyquist, standard = Hann
  to Nyquist (the suite's kernel since its first version), sharp = Shepp-Logan (sinc) to Nyquist. They are analytic
  stand-ins, not vendor kernels; their MTF ordering is measured by the TTF of TG-233 (Samei et al., Med. Phys. 46,
  2019) in tests/test_acquisition.py.
* Display fields of view: clinical reconstructions are 0.3-1.0 mm (head 220-250 mm fields at 512^2, ~0.45 mm).
  At the suite's 256^2 matrix, a 180 mm field gives 0.70 mm and a 140 mm field 0.55 mm pixels; the FBP
  reconstructs any grid from the same sinogram, and the fan still covers the whole body, so a small field costs
  what the default's costs.
* Noise: no vendor publishes its unattenuated counts or electronic noise; every profile keeps the suite's model
  (I0 = 1e5 photons per ray at full dose, electronic variance 10), so that dose means the same across profiles.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .geometry import FanBeamGeometry
from .noise import NoiseModel
from .simulate import Simulator


@dataclass(frozen=True)
class Kernel:
    """A reconstruction kernel: the ramp filter's apodisation window and where it ends (fraction of Nyquist)."""

    name: str
    window: str = "hann"
    cutoff: float = 1.0


SMOOTH, STANDARD, SHARP = Kernel("smooth", "hann", 0.7), Kernel("standard", "hann"), Kernel("sharp", "shepp-logan")
KERNELS = {k.name: k for k in (SMOOTH, STANDARD, SHARP)}


@dataclass(frozen=True)
class Acquisition:
    """One scanner, kernel and display field of view (its geometry's fov_mm), with the noise model."""

    name: str
    about: str
    geometry: FanBeamGeometry = field(default_factory=FanBeamGeometry)
    kernel: Kernel = STANDARD
    noise: NoiseModel = field(default_factory=NoiseModel)

    @property
    def pixel_mm(self) -> float:
        return self.geometry.pixel_mm

    def simulator(self, image_size: int | None = None) -> Simulator:
        """The simulator of this acquisition, its display field reconstructed on an `image_size` grid."""
        geometry = self.geometry if image_size is None else replace(self.geometry, image_size=image_size)
        return Simulator(geometry, self.noise, self.kernel.window, self.kernel.cutoff)

    def describe(self) -> str:
        return (f"{self.name}: {self.about}; {self.kernel.name} kernel, {self.geometry.fov_mm:g} mm field, "
                f"{self.pixel_mm:.2f} mm pixels at {self.geometry.image_size}^2")


_SIEMENS = FanBeamGeometry()
_GE = FanBeamGeometry(source_iso_mm=541.0, source_det_mm=949.075, n_channels=888, det_pitch_mm=1.0239, n_views=984)

DEFAULT_ACQUISITION = "default"
ACQUISITIONS: dict[str, Acquisition] = {a.name: a for a in (
    Acquisition("default", "Siemens SOMATOM Definition-like geometry (the suite's scanner since its first version)"),
    Acquisition("ge", "GE LightSpeed VCT-like geometry", _GE),
    Acquisition("smooth", "the default scanner, smooth kernel", kernel=SMOOTH),
    Acquisition("sharp", "the default scanner, sharp kernel", kernel=SHARP),
    Acquisition("dfov180", "the default scanner, a 180 mm display field", replace(_SIEMENS, fov_mm=180.0)),
    Acquisition("dfov140", "the default scanner, a 140 mm display field", replace(_SIEMENS, fov_mm=140.0)),
)}

# Not a profile of the acquisition axis: the field a technologist sets for a head, holding all of it (the phantoms'
# heads, larger than most, reach 137 mm from the isocentre: data/phantoms.py). Smaller fields cut the skull, and the
# clinical model reconstructs nothing outside its circle; scripts/realism.py compares heads with real CT through it.
HEAD_FIELD = Acquisition("head field", "the default scanner, a 280 mm field that holds the whole head",
                         replace(_SIEMENS, fov_mm=280.0))


def get_acquisition(name: str) -> Acquisition:
    if name not in ACQUISITIONS:
        raise ValueError(f"unknown acquisition {name!r}; choose from {', '.join(ACQUISITIONS)} "
                         "(`ldct-bench data acquisitions` describes them).")
    return ACQUISITIONS[name]


def acquisition_of(simulator: dict) -> str:
    """The profile whose simulator (at any image size) a dataset's recorded simulator is, or 'custom'."""
    size = simulator["geometry"]["image_size"]
    for name, acq in ACQUISITIONS.items():
        if acq.simulator(size).to_dict() == Simulator.from_dict(simulator).to_dict():
            return name
    return "custom"
