"""FoundDiff: DA-CLIP dose/anatomy perception + DA-Diff with the Mamba-based DACB; importing registers it."""

from . import method  # noqa: F401
