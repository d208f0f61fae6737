"""The dose x anatomy matrix: which doses a method is trained on (seen) and which are held out.

Doses are dose *fractions* of the full dose inside the suite. On the command line they
may be written as percents (``25``), fractions (``1/4``) or decimals (``0.25``).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

from .conventions import ANATOMIES, split_list

DEFAULT_DOSES = (0.05, 0.10, 0.25, 0.50)
DEFAULT_SEEN = (0.10, 0.50)
PAPER_DOSES = tuple(1 / k for k in (2, 3, 4, 5, 6, 8, 10, 20))  # FoundDiff's eight dose levels
PAPER_SEEN = tuple(1 / k for k in (2, 4, 6, 10))


def parse_dose(text: str | float) -> float:
    """'25' or '25%' (percent), '1/4' or '0.25' -> 0.25. A value with '%' is always a percent ('0.5%' is 0.005); a
    bare number above 1 is a percent, '1' is 1 % and '1.0' the full dose. Rejects doses outside (0, 100 %), and those
    that round to 0."""
    s = str(text).strip()
    percent = s.endswith("%")
    s = s[:-1].strip() if percent else s
    try:
        if "/" in s:
            value = float(Fraction(s)) / (100.0 if percent else 1.0)
        else:
            value = float(s)
            if percent or value > 1.0 or (value == 1.0 and "." not in s):  # '1' means 1 %; '1.0' means full dose
                value = value / 100.0
    except (ValueError, ZeroDivisionError, OverflowError):
        raise ValueError(f"dose {text!r} is not a number; write a percent (25), a fraction (1/4) "
                         "or a decimal (0.25).") from None
    if not 0.0 < value <= 1.0:
        raise ValueError(f"dose {text!r} is outside (0, 100 %]; a dose is a fraction of the full dose.")
    if value == 1.0:
        raise ValueError(f"dose {text!r} is the full dose, which every cell is scored against; give doses below 100 %.")
    if round(value, 6) == 0.0:
        raise ValueError(f"dose {text!r} rounds to 0 at the suite's precision (1e-6 of the full dose); give a larger "
                         "dose.")
    return round(value, 6)


def parse_doses(text: str | list) -> tuple[float, ...]:
    items = text if isinstance(text, (list, tuple)) else split_list(text)
    if not items:
        raise ValueError("no doses given; write e.g. --doses 5,10,25,50.")
    return tuple(sorted({parse_dose(t) for t in items}))


def parse_anatomies(text: str | list) -> tuple[str, ...]:
    items = text if isinstance(text, (list, tuple)) else split_list(text)
    bad = [a for a in items if a not in ANATOMIES]
    if bad or not items:
        raise ValueError(f"unknown anatomy {', '.join(bad) or '(none)'}; choose from {', '.join(ANATOMIES)}.")
    return tuple(a for a in ANATOMIES if a in items)


class Cell(NamedTuple):
    """One cell of the matrix: a body region at a dose, each seen in training or held out."""

    anatomy: str
    dose: float
    seen_dose: bool
    seen_anatomy: bool = True


@dataclass(frozen=True)
class Protocol:
    """Which doses and anatomies are evaluated, and which of them training may use (train_anatomies=None: the
    evaluated ones)."""

    doses: tuple[float, ...] = DEFAULT_DOSES
    seen_doses: tuple[float, ...] = DEFAULT_SEEN
    anatomies: tuple[str, ...] = ANATOMIES
    train_anatomies: tuple[str, ...] | None = None

    @property
    def trained_anatomies(self) -> tuple[str, ...]:
        return self.anatomies if self.train_anatomies is None else self.train_anatomies

    @classmethod
    def preset(cls, name: str) -> Protocol:
        if name == "default":
            return cls()
        if name == "paper":
            return cls(tuple(sorted(round(d, 6) for d in PAPER_DOSES)), tuple(sorted(round(d, 6) for d in PAPER_SEEN)))
        raise ValueError(f"unknown protocol preset {name!r}; choose default or paper.")

    def is_seen(self, dose: float) -> bool:
        return any(abs(dose - s) < 1e-6 for s in self.seen_doses)

    def cells(self) -> list[Cell]:
        return [Cell(a, d, self.is_seen(d), a in self.trained_anatomies) for a in self.anatomies for d in self.doses]

    def to_dict(self) -> dict:
        return {"doses": list(self.doses), "seen_doses": list(self.seen_doses), "anatomies": list(self.anatomies),
                "train_anatomies": list(self.trained_anatomies)}
