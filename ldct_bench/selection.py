"""Which methods `--methods` names: 'all' is every registered method that runs out of the box within a run's time
budget (`left_out_of_all` says why any other is left out; named, it runs), 'every' adds those left out only for
their speed, 'a,b' those methods, checked."""

from __future__ import annotations

from .checkpoints import committed_checkpoints
from .conventions import split_list
from .methods import Method, get_method, registry


def left_out_of_all(cls: type[Method]) -> str:
    """Why `--methods all` leaves `cls` out ('' when it runs): it cannot run here, it is too slow for a run's time
    budget, or it learns and no reference checkpoint is committed for it (a run would first train it from scratch,
    hours on a CPU). Named, it runs."""
    if cls.unavailable() or cls.too_slow_for_all:
        return cls.unavailable() or cls.too_slow_for_all
    if cls.learned:
        if not committed_checkpoints(cls.name):
            return "no reference checkpoint committed yet, so a run would train it from scratch; name it to train it"
    return ""


def resolve_methods(text: str) -> list[str]:
    """'all' -> every registered method that runs out of the box in a run's time budget, by name; 'every' -> those
    and the ones left out of 'all' only for their speed (what runs here at all, as the reference run has it);
    'a,b' -> those (validated)."""
    reg = registry()
    if text.strip() == "all":
        return sorted(n for n, c in reg.items() if not left_out_of_all(c))
    if text.strip() == "every":
        return sorted(n for n, c in reg.items() if not c.unavailable() and (not c.learned or committed_checkpoints(n)))
    names = split_list(text)
    if not names:
        raise ValueError("no methods given; write e.g. --methods ldct,redcnn or --methods all.")
    for n in names:
        get_method(n)
    return names
