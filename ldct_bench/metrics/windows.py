"""Named HU windows. Every score is computed inside one: both images are clipped to
[lo, hi] and data_range = hi - lo, so a table always says which convention it used."""

from __future__ import annotations

from dataclasses import dataclass

from ..conventions import FULL_RANGE_HU


@dataclass(frozen=True)
class Window:
    name: str
    lo: float
    hi: float
    note: str = ""

    def __post_init__(self):
        if not self.hi > self.lo:
            raise ValueError(f"window {self.name!r}: lower bound {self.lo} must be below upper bound {self.hi}.")

    @property
    def width(self) -> float:
        return self.hi - self.lo

    @classmethod
    def parse(cls, text: str) -> Window:
        """A registered name ('abdomen') or an explicit range ('-160,240' or 'name:-160,240')."""
        if text in WINDOWS:
            return WINDOWS[text]
        name, _, rng = text.rpartition(":")
        try:
            lo, hi = (float(v) for v in rng.split(","))
        except ValueError:
            raise ValueError(f"unknown window {text!r}; use one of {', '.join(WINDOWS)} or 'lo,hi' in HU.") from None
        return cls(name or f"[{lo:g},{hi:g}]", lo, hi)


WINDOWS = {w.name: w for w in (
    Window("full", *FULL_RANGE_HU, "whole 12-bit CT range"),
    Window("founddiff", -1000, 2000, "range the FoundDiff code maps to [0, 1] before scoring"),
    Window("abdomen", -160, 240, "soft tissue W400/L40"),
    Window("lung", -1350, 150, "lung W1500/L-600"),
    Window("brain", 0, 80, "brain W80/L40"),
    Window("bone", -450, 1050, "bone W1500/L300"),
)}

ANATOMY_WINDOWS = {
    "head": ("full", "founddiff", "brain", "bone"),
    "chest": ("full", "founddiff", "lung", "abdomen"),
    "abdomen": ("full", "founddiff", "abdomen"),
}

DISPLAY_WINDOW = {"head": "brain", "chest": "lung", "abdomen": "abdomen"}


def windows_for(anatomy: str, requested: list[str] | None = None) -> list[Window]:
    names = requested or ANATOMY_WINDOWS.get(anatomy, ("full", "founddiff"))
    return [Window.parse(n) for n in names]
