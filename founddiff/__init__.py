"""FoundDiff: DA-CLIP dose/anatomy perception + DA-Diff with the Mamba-based DACB.

Registered through the `ldct_bench.methods` entry-point group in pyproject.toml, as a plug-in would be."""
