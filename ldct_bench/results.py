"""The results store: one tidy per-slice table plus the run manifest, in one run directory.

    manifest.json                          how the run was made (args, config, seeds, versions, commit, hardware, timings)
    cells/<method>/<anatomy>_<dose>.parquet  per-slice scores of one cell, written atomically (the unit of resume)
    results.parquet                        all cells concatenated (rebuilt at the end of every run)
    perception.parquet                     DA-CLIP's per-slice dose/anatomy perception (when FoundDiff ran),
                                           gathered from perception/<anatomy>_<dose>.parquet, one per FoundDiff cell
    examples/                              a few slices per cell for figure grids (float16 HU)
    images/<method>/<cell>.npz, <cell>/<patient>/*.dcm   --save-images: every denoised slice (DICOM when the input was)
    iq/<method>/<dose>.parquet             --iq: task-based image quality of one method at one dose (the unit of resume),
    iq/<method>/<dose>.curves.parquet      and its radial NPS and TTF curves; gathered into iq.parquet, iq_curves.parquet

Rows: run, method, anatomy, dose, seen_dose, seen_anatomy, seen_data, acquisition, seen_acquisition, patient, slice,
reference, window, metric, value. The four `seen_*` flags say, along each axis of generalization, whether training
saw the row's dose, its anatomy, its dataset and its acquisition (`acquisition` names it: a profile of
data/acquisition.py, or an imported dataset). `reference` is what a denoised slice is scored against: `full_dose`
(the papers' convention: the full-dose scan, itself noisy) or, where the dataset has it, `truth` (the noiseless
reconstruction, which only a simulation can give). Older stores read back with what they could only have
been: `seen` is `seen_dose`, anatomy, dataset and acquisition were seen (the acquisition 'unrecorded'), the
reference was the full dose.
Task-based rows (IQ_COLUMNS) are not per slice but per ensemble of phantom realisations: run, method, dose,
seen_dose, target (a disk '10mm/3HU', a rod 'bone/+1000HU' or the 'uniform' region), metric (cho_dprime, cho_auc,
nps_noise, nps_fpeak, nps_fmean, nps_fmean_shift, ttf50, ttf10), value, its 95 % CI where one is estimated, and n
(realisations per class). The method 'full dose' at dose 1 is the full-dose FBP: the reference of the shifts.
Parquet rather than CSV: column types survive (bool flags, exact float64 scores), it is
compact and fast for pandas, and a CSV is one `report --format csv` away.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path, atomic_write_json
from .conventions import safe

COLUMNS = ["run", "method", "anatomy", "dose", "seen_dose", "seen_anatomy", "seen_data", "acquisition",
           "seen_acquisition", "patient", "slice",
           "reference", "window", "metric", "value"]
# axis of generalization -> its flag
AXES = {"dose": "seen_dose", "anatomy": "seen_anatomy", "data": "seen_data", "acquisition": "seen_acquisition"}
REFERENCES = ("full_dose", "truth")
IQ_COLUMNS = ["run", "method", "dose", "seen_dose", "target", "metric", "value", "ci_low", "ci_high", "n"]
CURVE_COLUMNS = ["method", "dose", "kind", "target", "frequency", "value"]
FULL_DOSE = "full dose"  # the task-based reference: the FBP of the full-dose scans
UNRECORDED = "unrecorded"  # the acquisition of rows written before acquisitions were recorded


def cell_name(anatomy: str, dose: float) -> str:
    return f"{safe(anatomy)}_{dose:.4f}"


def run_folders(path: Path) -> list[Path]:
    """`path` itself when it is a run folder; else the run folders directly inside it, in the order they were made
    (what `run --acquisitions` writes: one run per profile); one sentence when it holds none."""
    if (path / "manifest.json").is_file():
        return [path]
    inside = [d for d in sorted(path.iterdir()) if (d / "manifest.json").is_file()] if path.is_dir() else []
    if not inside:
        raise ValueError(f"{path} is not a run folder (no manifest.json) and holds none; give a folder that "
                         "`ldct-bench run` wrote.")
    return sorted(inside, key=lambda d: RunStore(d).read_manifest().get("created", ""))


class RunStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def name(self) -> str:
        return self.root.name

    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def read_manifest(self) -> dict:
        p = self.manifest_path()
        if not p.is_file():
            raise FileNotFoundError(f"{self.root} is not a run directory (no manifest.json); "
                                    "give the folder `ldct-bench run` wrote.")
        try:
            manifest = json.loads(p.read_text())
        except ValueError:
            manifest = None
        if not isinstance(manifest, dict):
            raise ValueError(f"{p} is not a run manifest (not a JSON object); restore it, or run again into another "
                             "--out.")
        return manifest

    def write_manifest(self, manifest: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.manifest_path(), manifest)

    def cell_path(self, method: str, anatomy: str, dose: float) -> Path:
        return self.root / "cells" / safe(method) / f"{cell_name(anatomy, dose)}.parquet"

    def has_scores(self) -> bool:
        """Whether any cell (or task-based score) has been written: a folder without is a run that did nothing yet."""
        return (any(self.root.glob("cells/*/*.parquet")) or any(self.root.glob("iq/*/*.parquet"))
                or (self.root / "results.parquet").is_file())

    def unpack(self) -> None:
        """The per-cell files a run resumes from, written back from the consolidated tables where they are missing.
        A committed run is cloned without them (.gitignore): re-run, it would otherwise score every cell again,
        and a re-run stopped early would consolidate only what it had redone. Every table is read (and checked)
        before anything is written."""
        results = self.table() if (self.root / "results.parquet").is_file() else None
        perception, iq, curves = self.perception(), self.iq_table(), self.iq_curves()
        if results is not None:
            for (method, anatomy, dose), rows in results.groupby(["method", "anatomy", "dose"], sort=False):
                if not self.has_cell(method, anatomy, dose):
                    self.write_cell(method, anatomy, dose, rows)
        if perception is not None:
            for (anatomy, dose), rows in perception.groupby(["anatomy", "dose"], sort=False):
                if not self.perception_path(anatomy, dose).is_file():
                    self.write_perception(anatomy, dose, rows)
        if iq is not None and curves is not None:
            for (method, dose), rows in iq.groupby(["method", "dose"], sort=False):
                if not self.has_iq(method, dose):
                    self.write_iq(method, dose, rows, curves[(curves["method"] == method) & (curves["dose"] == dose)])

    def has_cell(self, method: str, anatomy: str, dose: float) -> bool:
        return self.cell_path(method, anatomy, dose).is_file()

    def forget(self, method: str) -> None:
        """Remove every score and image of `method` (its cells, task-based scores, examples, saved images), so that
        the run scores it again; the caller updates the manifest after, so that a kill in between forgets again."""
        import shutil

        for kind in ("cells", "iq", "examples", "images"):
            shutil.rmtree(self.root / kind / safe(method), ignore_errors=True)

    def write_cell(self, method: str, anatomy: str, dose: float, rows: pd.DataFrame) -> None:
        _atomic_parquet(self.cell_path(method, anatomy, dose), rows[COLUMNS])

    def write_examples(self, method: str, anatomy: str, dose: float, arrays: dict[str, np.ndarray]) -> None:
        path = self.root / "examples" / safe(method) / f"{cell_name(anatomy, dose)}.npz"
        with atomic_path(path, ".tmp.npz") as tmp:  # savez insists on the .npz ending
            np.savez_compressed(tmp, **{k: np.asarray(v, dtype=np.float16) for k, v in arrays.items()})

    def write_images(self, method: str, anatomy: str, dose: float, images: np.ndarray, meta: pd.DataFrame) -> None:
        """--save-images: every denoised test slice of a cell, float32 HU, with its (patient, slice) index."""
        path = self.root / "images" / safe(method) / f"{cell_name(anatomy, dose)}.npz"
        with atomic_path(path, ".tmp.npz") as tmp:
            np.savez_compressed(tmp, images=images.astype(np.float32), patient=meta["patient"].to_numpy().astype(str),
                                slice=meta["slice"].to_numpy())

    def images(self, method: str, anatomy: str, dose: float) -> dict[str, np.ndarray] | None:
        """What write_images wrote for a cell (images, patient, slice), or None where --save-images was not given."""
        path = self.root / "images" / safe(method) / f"{cell_name(anatomy, dose)}.npz"
        if not path.is_file():
            return None
        with np.load(path) as z:
            return {k: z[k] for k in ("images", "patient", "slice")}

    def images_dir(self, method: str, anatomy: str, dose: float) -> Path:
        """Where --save-images puts a cell's DICOM series (one folder per patient)."""
        return self.root / "images" / safe(method) / cell_name(anatomy, dose)

    def examples(self, method: str, anatomy: str, dose: float) -> dict[str, np.ndarray] | None:
        path = self.root / "examples" / safe(method) / f"{cell_name(anatomy, dose)}.npz"
        if not path.is_file():
            return None
        with np.load(path) as z:
            return {k: z[k].astype(np.float32) for k in z.files}

    def consolidate(self) -> pd.DataFrame:
        """Concatenate every finished cell into results.parquet (and perception.parquet), atomically; return it."""
        parts = sorted((self.root / "cells").glob("*/*.parquet"))
        table = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)
        table = upgrade(table).sort_values(
            ["method", "anatomy", "dose", "patient", "slice", "reference", "window", "metric"], kind="stable")
        _atomic_parquet(self.root / "results.parquet", table.reset_index(drop=True))
        seen = sorted((self.root / "perception").glob("*.parquet"))
        if seen:
            perception = pd.concat([pd.read_parquet(p) for p in seen], ignore_index=True)
            _atomic_parquet(self.root / "perception.parquet", perception)
        self._consolidate_iq()
        return table

    def table(self, reference: str | None = None) -> pd.DataFrame:
        """Every score of the run, or only those against `reference` (full_dose or truth)."""
        path = self.root / "results.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"{self.root} has no results.parquet; the run has not finished "
                                    "(run it again to resume).")
        try:
            raw = pd.read_parquet(path)
        except Exception as exc:  # pyarrow's own kinds: not parquet, truncated
            raise ValueError(f"{path} is not a readable results table ({type(exc).__name__}); run `ldct-bench run` "
                             "again into that --out to rebuild it from its cells.") from None
        check_schema(raw, path)
        table = upgrade(raw)
        return table if reference is None else select_reference(table, reference, str(self.root))

    # -- task-based image quality (--iq) ----------------------------------------------------------------------
    def iq_path(self, method: str, dose: float, suffix: str = ".parquet") -> Path:
        return self.root / "iq" / safe(method) / f"{dose:.4f}{suffix}"

    def has_iq(self, method: str, dose: float) -> bool:
        return self.iq_path(method, dose).is_file()

    def write_iq(self, method: str, dose: float, rows: pd.DataFrame, curves: pd.DataFrame) -> None:
        """The curves first: the metrics file's presence means the IQ cell is complete."""
        _atomic_parquet(self.iq_path(method, dose, ".curves.parquet"), curves[CURVE_COLUMNS])
        _atomic_parquet(self.iq_path(method, dose), rows[IQ_COLUMNS])

    def read_iq(self, method: str, dose: float) -> pd.DataFrame:
        return pd.read_parquet(self.iq_path(method, dose))

    def iq_table(self) -> pd.DataFrame | None:
        """The run's task-based metrics (None when it ran without --iq)."""
        return _read_table(self.root / "iq.parquet", IQ_COLUMNS)

    def iq_curves(self) -> pd.DataFrame | None:
        return _read_table(self.root / "iq_curves.parquet", CURVE_COLUMNS)

    def _consolidate_iq(self) -> None:
        rows = sorted(p for p in (self.root / "iq").glob("*/*.parquet") if not p.name.endswith(".curves.parquet"))
        if not rows:
            return
        _atomic_parquet(self.root / "iq.parquet", pd.concat([pd.read_parquet(p) for p in rows], ignore_index=True))
        curves = [p.with_name(p.name.replace(".parquet", ".curves.parquet")) for p in rows]
        _atomic_parquet(self.root / "iq_curves.parquet", pd.concat([pd.read_parquet(p) for p in curves],
                                                                   ignore_index=True))

    def perception_path(self, anatomy: str, dose: float) -> Path:
        return self.root / "perception" / f"{cell_name(anatomy, dose)}.parquet"

    def write_perception(self, anatomy: str, dose: float, df: pd.DataFrame) -> None:
        _atomic_parquet(self.perception_path(anatomy, dose), df)

    def perception(self) -> pd.DataFrame | None:
        return _read_table(self.root / "perception.parquet", ["anatomy", "dose"])


def select_reference(table: pd.DataFrame, reference: str, where: str = "these results") -> pd.DataFrame:
    """The scores against one reference: tables never average a truth score with a full-dose one."""
    if reference not in REFERENCES:
        raise ValueError(f"unknown reference {reference!r}; choose {' or '.join(REFERENCES)}.")
    table = upgrade(table)
    sub = table[table["reference"] == reference]
    if sub.empty:
        raise ValueError(f"{where} has no scores against {reference!r} (it has {', '.join(table['reference'].unique())}); "
                         "the truth exists only for simulated data.")
    return sub


NUMERIC, FLAGS = ("dose", "slice", "value"), ("seen_dose", "seen_anatomy", "seen_data", "seen_acquisition")
_FILLED = {"reference", "acquisition", *FLAGS}  # what `upgrade` gives an older store that lacks it


def check_schema(table: pd.DataFrame, where) -> None:
    """One sentence, on opening a store, when its table is not one `ldct-bench run` writes: a column missing, a
    number column holding text, a flag that is not true/false. Every query downstream then trusts the types (a
    NaN score is allowed: the report shows it as '–')."""
    missing = [c for c in COLUMNS if c not in table.columns and c not in _FILLED]
    if missing:
        raise ValueError(f"{where} lacks the column(s) {', '.join(missing)} of a results table; it was not written "
                         "by `ldct-bench run` (or is damaged): run again into a new --out.")
    wrong = [f"{c} holds {_kind(table[c])}, not numbers" for c in NUMERIC
             if pd.api.types.is_bool_dtype(table[c]) or not pd.api.types.is_numeric_dtype(table[c])]
    wrong += [f"{c} holds {_kind(table[c])}, not true/false" for c in FLAGS
              if c in table.columns and not pd.api.types.is_bool_dtype(table[c])]
    if wrong:
        raise ValueError(f"{where} is not a results table `ldct-bench run` writes: {'; '.join(wrong)}; run again into "
                         "a new --out.")


def _kind(column: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(column):
        return "true/false"
    return "numbers" if pd.api.types.is_numeric_dtype(column) else "text"


def upgrade(table: pd.DataFrame) -> pd.DataFrame:
    """A table of any store version in today's columns: before `reference` every score was against the full dose;
    before the `seen_*` flags, `seen` meant the dose, and training had seen every anatomy, the dataset and its
    acquisition."""
    if set(COLUMNS) <= set(table.columns):
        return table
    defaults = {"reference": "full_dose", "seen_dose": table["seen"] if "seen" in table else True,
                "seen_anatomy": True, "seen_data": True, "acquisition": UNRECORDED, "seen_acquisition": True}
    return table.assign(**{k: v for k, v in defaults.items() if k not in table.columns})[COLUMNS]


def _read_table(path: Path, columns: list[str]) -> pd.DataFrame | None:
    """A run's side table (task-based scores, their curves, DA-CLIP's perception), None where the run wrote none;
    one sentence where it is not such a table (a re-run reads them to resume, a report to draw)."""
    if not path.is_file():
        return None
    try:
        table = pd.read_parquet(path)
    except Exception as exc:  # pyarrow's own kinds: not parquet, truncated
        raise ValueError(f"{path} is not a readable table ({type(exc).__name__}); restore it, or run again into "
                         "another --out.") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {', '.join(missing)}; it was not written by `ldct-bench run` "
                         "(or is damaged): restore it, or run again into another --out.")
    return table


def _atomic_parquet(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
