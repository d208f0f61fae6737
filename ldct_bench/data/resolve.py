"""Dataset resolution, in one place: a `--data` value and what a run needs of it -> a dataset that has it.

`embedded` is simulated on demand: whatever (anatomy, split, dose) the cache lacks is simulated
first, and the dataset returned sees it. `embedded@NAME` is the same phantoms through the acquisition
profile NAME (data/acquisition.py: another scanner, kernel or display field), cached beside it. An
imported dataset (its name in the cache, or a folder) is checked to hold every dose asked for. A
dataset's name, anatomies and acquisition are known without opening its arrays.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..conventions import ANATOMIES, dose_labels, split_list
from .acquisition import ACQUISITIONS, DEFAULT_ACQUISITION, acquisition_of, get_acquisition
from .dataset import DatasetUnion, LDCTDataset, PhantomConfig, default_cache_dir

IMPORTABLE = ("mayo2016", "mayo2020")
EMBEDDED = "embedded"
# What plain `embedded` means as training data: the phantoms through every acquisition profile, so the reference
# checkpoints (and a user's `denoise`) have seen pixels of 0.55-1.37 mm and every kernel, not one scanner (#30).
REFERENCE_TRAINING = EMBEDDED + "@" + ",".join(ACQUISITIONS)


def is_embedded(spec: str | None) -> bool:
    """Whether `spec` names the simulated phantoms (through the default acquisition or `embedded@NAME`)."""
    return spec is not None and (spec == EMBEDDED or spec.startswith(EMBEDDED + "@"))


def training_spec(spec: str, phantoms: PhantomConfig | None = None) -> str:
    """The data a method trains on when `spec` is its training data: plain 'embedded' through the default scanner is
    every acquisition profile (REFERENCE_TRAINING); phantoms through a scanner of their own, a named profile, a list
    of them or an imported dataset are themselves."""
    custom = acquisition_of((phantoms or PhantomConfig()).simulator) != DEFAULT_ACQUISITION
    return REFERENCE_TRAINING if spec == EMBEDDED and not custom else spec


def embedded_acquisitions(spec: str) -> list[str]:
    """The acquisition profiles of an embedded spec: 'embedded' -> ['default'], 'embedded@sharp' -> ['sharp'],
    'embedded@default,sharp' -> both (a training set through several scanners; each name checked)."""
    names = split_list(spec.partition("@")[2]) or [DEFAULT_ACQUISITION]
    for name in names:
        get_acquisition(name)
    return list(dict.fromkeys(names))


def embedded_acquisition(spec: str) -> str:
    """The one acquisition profile of an embedded spec: 'embedded' -> 'default', 'embedded@sharp' -> 'sharp'."""
    names = embedded_acquisitions(spec)
    if len(names) > 1:
        raise ValueError(f"{spec} names {len(names)} acquisitions; a dataset that is evaluated is one of them "
                         "(several are for --train-data or --train-acquisitions).")
    return names[0]


def single_specs(spec: str) -> list[str]:
    """An embedded spec of several acquisitions as one spec each ('embedded' stays itself)."""
    if spec == EMBEDDED:
        return [spec]
    return [f"{EMBEDDED}@{name}" for name in embedded_acquisitions(spec)]


def phantoms_for(spec: str, phantoms: PhantomConfig | None = None) -> PhantomConfig:
    """The phantom config an embedded spec simulates: `phantoms` (default PhantomConfig()) as given for plain
    'embedded', or its patients through acquisition NAME's scanner, kernel and field for 'embedded@NAME'."""
    base = phantoms or PhantomConfig()
    if spec == EMBEDDED:
        return base
    return replace(base, simulator=get_acquisition(embedded_acquisition(spec)).simulator(base.image_size).to_dict())


def data_family(spec: str) -> str:
    """What the dataset axis compares: every embedded acquisition is the same phantom patients ('embedded')."""
    return EMBEDDED if is_embedded(spec) else spec


def dataset_acquisitions(spec: str, cache_dir: Path | None = None,
                         phantoms: PhantomConfig | None = None) -> list[str]:
    """The acquisition axis' labels of `spec`: the profile of each embedded acquisition (plain 'embedded' with a
    config of its own: whichever profile its simulator is, else 'custom'; the same for a phantom dataset given by
    its folder); an imported dataset's folder name."""
    if is_embedded(spec):
        return [acquisition_of(phantoms_for(one, phantoms).simulator) for one in single_specs(spec)]
    ds = LDCTDataset(imported_path(spec, cache_dir))
    return [acquisition_of(ds.manifest["config"]["simulator"]) if ds.manifest.get("kind") == "embedded"
            else ds.root.name]


def open_dataset(spec: str, doses, anatomies, splits, *, cache_dir: Path | None = None,
                 phantoms: PhantomConfig | None = None, progress: bool = True) -> LDCTDataset:
    """'embedded' (the phantoms of `phantoms`, default PhantomConfig()), an imported dataset's name, or a
    dataset folder; raises one clear error when the data is not there."""
    if is_embedded(spec):
        parts = [LDCTDataset.embedded(phantoms_for(one, phantoms), doses=doses, anatomies=anatomies, splits=splits,
                                      cache_dir=cache_dir, progress=progress) for one in single_specs(spec)]
        return parts[0] if len(parts) == 1 else DatasetUnion(parts)
    path = imported_path(spec, cache_dir)
    ds = LDCTDataset(path)
    for a in anatomies:
        have = ds.doses(a)
        missing = [d for d in doses if not any(abs(d - h) < 1e-6 for h in have)]
        if missing:
            raise ValueError(f"dataset {path} has no {dose_labels(missing)} dose for {a}; it has {dose_labels(have)} "
                             "(import extra doses with --doses).")
    return ds


def imported_path(spec: str, cache_dir: Path | None = None, flag: str = "--data") -> Path:
    """The folder of an imported dataset given by name (in the cache) or path; `flag` is the option that named it,
    for the sentence when it is not there."""
    path = Path(spec)
    if not path.exists():
        named = Path(cache_dir or default_cache_dir()) / spec
        if spec in IMPORTABLE and not named.exists():
            raise FileNotFoundError(f"{flag} {spec}: not imported yet; run `ldct-bench data import --source {spec} "
                                    "--root DIR` first.")
        path = named
    if not path.is_dir():
        raise FileNotFoundError(f"{flag} {spec}: no such dataset folder.")
    return path


def dataset_name(spec: str, cache_dir: Path | None = None, phantoms: PhantomConfig | None = None) -> str:
    """The name checkpoints trained on `spec` are keyed by (its cache folder), without simulating anything."""
    if is_embedded(spec):
        return "+".join(phantoms_for(one, phantoms).dataset_name for one in single_specs(spec))
    return imported_path(spec, cache_dir).name


def dataset_anatomies(spec: str, cache_dir: Path | None = None) -> tuple[str, ...]:
    """The body regions `spec` holds, in the suite's order (the embedded set has all of them)."""
    if is_embedded(spec):
        embedded_acquisitions(spec)  # a profile that does not exist is named here, before anything runs
        return ANATOMIES
    have = LDCTDataset(imported_path(spec, cache_dir)).anatomies
    return tuple(a for a in ANATOMIES if a in have) + tuple(sorted(set(have) - set(ANATOMIES)))


def dataset_pixel_mm(spec: str, cache_dir: Path | None = None, phantoms: PhantomConfig | None = None):
    """The in-plane pixel size of `spec` (see LDCTDataset.pixel_mm), without simulating anything."""
    if is_embedded(spec):
        from .simulate import Simulator

        sizes = [Simulator.from_dict(phantoms_for(one, phantoms).simulator).geometry.pixel_mm
                 for one in single_specs(spec)]
        return sizes[0] if len(set(sizes)) == 1 else sorted(set(sizes))
    return LDCTDataset(imported_path(spec, cache_dir)).pixel_mm


def dataset_doses(spec: str, anatomies, cache_dir: Path | None = None) -> tuple[float, ...] | None:
    """The doses an imported dataset holds for every one of `anatomies` (vendor low doses and simulated ones), from
    its manifest; None for the embedded set, which simulates whatever is asked."""
    if is_embedded(spec):
        return None
    ds = LDCTDataset(imported_path(spec, cache_dir))
    common = set.intersection(*(set(ds.doses(a)) for a in anatomies)) if anatomies else set()
    if not common:
        raise ValueError(f"--data {spec}: its anatomies ({', '.join(anatomies)}) share no low dose; import one with "
                         "--doses, or choose --anatomies and --doses.")
    return tuple(sorted(common))


def alternate_seen(doses) -> tuple[float, ...]:
    """A seen set for doses nobody chose: every other dose from the highest down, so the held-out ones lie between
    and below seen ones (on 5, 10, 25, 50 % it is the default protocol's 10 and 50 %)."""
    return tuple(sorted(sorted(doses, reverse=True)[::2]))


def lacks_test_split(spec: str, anatomies, cache_dir: Path | None = None) -> list[str]:
    """The anatomies of an imported dataset with no test patient (too few patients to split), from its manifest."""
    if is_embedded(spec):
        return []
    ds = LDCTDataset(imported_path(spec, cache_dir))
    return [a for a in anatomies if not ds.patients(a, "test")]
