"""The `ldct-bench` command line: data, methods, train, run, report, bench.

Every command turns bad input into one sentence and a non-zero exit (click's
UsageError/ClickException), never a traceback.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import click

from .config import PROFILES
from .conventions import ANATOMIES, ANATOMY_MODELS, DEFAULT_ANATOMY_MODEL, dose_labels, split_list
from .environment import keep_freed_memory, resolve_device
from .protocol import parse_anatomies, parse_doses


def friendly(fn):
    """Turn the suite's own input errors into one-line click errors."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, KeyError) as exc:  # the suite's own sentences
            raise click.ClickException(str(exc.args[0] if exc.args else exc)) from None
        except (OSError, RuntimeError) as exc:  # the whole message (an OSError's first arg is its errno)
            raise click.ClickException(str(exc)) from None

    return wrapper


def _doses(ctx, param, value):
    if value is None:
        return None
    try:
        return parse_doses(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _anatomies(ctx, param, value):
    if value is None:
        return None
    try:
        return parse_anatomies(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ldct-bench")
def main():
    """Benchmark low-dose CT denoisers over a dose x anatomy matrix."""
    keep_freed_memory()  # large tensors reuse freed memory instead of page-faulting in new (environment.py)


# ---------------------------------------------------------------------------------------------- data
def _phantoms_option(fn):
    return click.option("--phantoms", "anatomy_model", type=click.Choice(list(ANATOMY_MODELS)),
                        default=DEFAULT_ANATOMY_MODEL, show_default=True,
                        help="The embedded patients' anatomy: realistic (non-elliptic outlines, power-law texture, "
                             "trabecular bone, lung vessel trees: data/detail.py), clinical (that anatomy on the "
                             "scanner's couch or head holder, inside the reconstruction circle: data/support.py), "
                             "clinical2 (that with a layered scalp, dense skull tables and a head protocol's flux), "
                             "or the older ellipses.")(fn)


@main.group()
def data():
    """Simulate, import and inspect datasets."""


@data.command("simulate")
@click.option("--acquisition", "acquisitions", default="default", show_default=True,
              help="Acquisition profiles to simulate through, comma-separated (`ldct-bench data acquisitions`).")
@click.option("--anatomies", default=",".join(ANATOMIES), callback=_anatomies, show_default=True)
@click.option("--doses", default="5,10,25,50", callback=_doses, show_default=True,
              help="Percents (25), fractions (1/4) or decimals (0.25).")
@click.option("--patients", type=int, default=None, help="Patients per anatomy (split about 70/10/20 %); default 8/2/6.")
@click.option("--slices", type=int, default=4, show_default=True, help="Adjacent slices per patient.")
@click.option("--size", type=click.IntRange(32, 1024), default=256, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Default: $LDCT_BENCH_CACHE or ~/.cache/ldct-bench.")
@_phantoms_option
@friendly
def data_simulate(acquisitions, anatomies, doses, patients, slices, size, seed, cache_dir, anatomy_model):
    """Simulate the embedded phantom dataset (cached; re-running reuses it), once per acquisition."""
    from .data.acquisition import get_acquisition
    from .data.dataset import LDCTDataset, PhantomConfig
    from .data.resolve import phantoms_for

    names = split_list(acquisitions)
    if not names:
        raise click.BadParameter("no acquisition given; write e.g. --acquisition default,sharp.")
    for name in names:
        get_acquisition(name)  # every name checked before anything is simulated
    cfg = replace(PhantomConfig.sized(size=size, slices=slices, patients=patients, seed=seed),
                  anatomy_model=anatomy_model)
    for name in names:
        ds = LDCTDataset.embedded(phantoms_for(f"embedded@{name}", cfg), doses=doses, anatomies=anatomies,
                                  cache_dir=cache_dir)
        click.echo(f"{name}: dataset written to {ds.root} (--data embedded@{name})")


@data.command("acquisitions")
def data_acquisitions():
    """List the acquisition profiles (scanner geometry, kernel, display field, pixel size)."""
    from .data.acquisition import ACQUISITIONS

    for acq in ACQUISITIONS.values():
        g = acq.geometry
        click.echo(f"{acq.describe()}\n    {g.source_iso_mm:g}/{g.source_det_mm:g} mm source-isocentre/detector, "
                   f"{g.n_channels} channels of {g.det_pitch_mm:g} mm, {g.n_views} views; kernel {acq.kernel.window} "
                   f"to {acq.kernel.cutoff:g} of Nyquist; I0 {acq.noise.i0:g}, electronic variance "
                   f"{acq.noise.electronic_var:g}")


@data.command("info")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None)
@friendly
def data_info(cache_dir):
    """List cached datasets (a broken one is named with its fault; the rest are still listed)."""
    from .data.dataset import default_cache_dir

    root = Path(cache_dir or default_cache_dir())
    found = sorted(m for m in root.glob("*/manifest.json") if not m.parent.name.startswith(".")) if root.is_dir() else []
    if not found:
        click.echo(f"no datasets cached under {root}")
        return
    broken = []
    for m in found:
        try:
            click.echo(_dataset_line(m.parent))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            broken.append(m.parent.name)
            click.echo(f"{m.parent}\n  broken: {exc.args[0] if exc.args else exc}")
    if broken:
        raise click.ClickException(f"{len(broken)} of {len(found)} cached datasets cannot be read ({', '.join(broken)}); "
                                   "each says why above.")


def _dataset_line(folder: Path) -> str:
    """What `data info` says of one cached folder: an anatomical dataset, or an image-quality phantom set."""
    from .data.dataset import LDCTDataset

    if json.loads((folder / "manifest.json").read_text()).get("kind") == "iq-phantom":
        from .data.iq_phantom import IQPhantomSet

        iq = IQPhantomSet(folder)
        return f"{folder}\n  kind=iq-phantom files={len(iq.manifest['files'])} realisations={iq.config.realisations}"
    ds = LDCTDataset(folder)
    splits = {a: {s: len(p) for s, p in v.items()} for a, v in ds.manifest["splits"].items()}
    return (f"{folder}\n  kind={ds.manifest.get('kind')} files={len(ds.manifest['files'])} "
            f"doses=[{dose_labels(ds.doses())}]\n  patients={splits}")


@data.command("import")
@click.option("--source", type=click.Choice(["mayo2016", "mayo2020", "dicom"]), required=True)
@click.option("--root", "src", type=click.Path(path_type=Path), required=True, help="Folder holding the DICOM series.")
@click.option("--doses", default=None, callback=_doses, help="Extra doses to simulate from the full-dose slices.")
@click.option("--name", default=None, help="Dataset name (default: the source).")
@click.option("--size", type=click.IntRange(32, 2048), default=None,
              help="Resample slices to this size, 32 to 2048 (default: keep).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--anatomy", type=click.Choice(ANATOMIES), default=None,
              help="Body region of every series (default: Mayo's conventions, or the headers' BodyPartExamined and "
                   "descriptions).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None)
@friendly
def data_import(source, src, doses, name, size, seed, anatomy, cache_dir):
    """Import real full-/low-dose DICOM data (AAPM-Mayo 2016, Mayo 2020 LDCT-and-Projection-data)."""
    from .data.dicom_import import import_dataset, import_summary

    ds = import_dataset(src, source=source, name=name, extra_doses=doses or (), size=size, seed=seed,
                        cache_dir=cache_dir, anatomy=anatomy)
    click.echo(import_summary(ds))
    click.echo(f"dataset written to {ds.root}")


# ------------------------------------------------------------------------------------------- methods
def _weights_found(name: str) -> str:
    """Where a learned method's trained weights are looked for first, and what is there."""
    from .checkpoints import REFERENCE_DIR, committed_checkpoints

    found, where = committed_checkpoints(name), REFERENCE_DIR / name
    return (f"trained weights: {len(found)} committed in {where} ({', '.join(p.parent.name for p in found)})" if found
            else f"trained weights: none committed in {where}; a run trains them (cached) or takes --checkpoint")


def _count(parameters: int) -> str:
    """Millions, or the number itself where it is small (the bilateral filter has nine)."""
    return f"{parameters / 1e6:.2f}M" if parameters >= 10_000 else str(parameters)


@main.command("methods")
@friendly
def methods_cmd():
    """List registered methods with a one-line description and parameter count."""
    from .methods import registry
    from .selection import left_out_of_all

    for name, cls in sorted(registry().items()):
        n = cls(cls.Config.profile("quick")).n_parameters() if cls.learned else 0
        p = cls(cls.Config.profile("paper")).n_parameters() if cls.learned else 0
        why = left_out_of_all(cls)
        size = f"{_count(n)} quick / {_count(p)} paper params" if cls.learned else "no parameters"
        click.echo(f"{name:12s} {size:36s} {cls.description}" + (f"  [not in 'all': {why}]" if why else ""))
        settings = cls.Config.profile("quick").to_dict() if not cls.learned else {}
        if settings:  # a method that learns nothing is its settings: show the quick profile's
            click.echo(f"{'':12s} quick profile: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
        for need in ([cls.needs()] if cls.needs() else []) + ([_weights_found(name)] if cls.learned else []):
            click.echo(f"{'':12s} needs {need}")


# ------------------------------------------------------------------------------------- train and run
def _data_options(fn):
    fn = click.option("--data", "data_spec", default="embedded", show_default=True,
                      help="embedded (the phantoms; to train on, through every acquisition profile), "
                           "embedded@ACQUISITION (through one scanner, kernel or display field: `ldct-bench data "
                           "acquisitions`), or an imported dataset's name or folder.")(fn)
    fn = click.option("--cache-dir", type=click.Path(path_type=Path), default=None)(fn)
    return _phantoms_option(fn)


def _set_option(fn):
    return click.option("--set", "sets", multiple=True, metavar="METHOD.FIELD=VALUE",
                        help="Set a field of a method's config on top of its profile (repeatable), e.g. "
                             "--set redcnn.iterations=500; recorded in the manifests.")(fn)


def _cli_args() -> dict:
    return {k: str(v) for k, v in click.get_current_context().params.items()}


@main.command("train")
@click.option("--method", "method_name", required=True)
@click.option("--profile", type=click.Choice(PROFILES), default="quick", show_default=True)
@click.option("--doses", default=None, callback=_doses, help="Seen (training) doses; default: the protocol's seen set.")
@click.option("--anatomies", default=",".join(ANATOMIES), callback=_anatomies, show_default=True)
@click.option("--protocol", "training", type=click.Choice(["generalist", "specialist"]), default="generalist",
              show_default=True, help="One model for all seen cells, or one per (anatomy, dose) cell.")
@click.option("--iterations", type=click.IntRange(min=1), default=None, help="Override the profile's iteration budget.")
@click.option("--time-budget", type=float, default=None,
              help="Stop (resumably) after this many seconds of this call; a resume gets its own budget.")
@click.option("--device", default="auto", show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Checkpoint folder (default: the cache).")
@click.option("--retrain", is_flag=True, help="Start over instead of resuming.")
@click.option("--vgg19-weights", type=click.Path(path_type=Path), default=None, help="Local VGG19 file for wganvgg.")
@click.option("--plain-loss", is_flag=True,
              help="The papers' unweighted loss instead of weighting each (anatomy, dose) cell by 1/its input error.")
@_set_option
@_data_options
@friendly
def train_cmd(**opts):
    """Train a method through the shared harness (resumes an interrupted run)."""
    from .checkpoints import TrainJob
    from .data.dataset import PhantomConfig
    from .data.resolve import open_dataset, training_spec
    from .distributed import from_env, local_device
    from .protocol import Protocol
    from .training import train_method

    name, seen, anatomies = opts["method_name"], opts["doses"] or Protocol().seen_doses, opts["anatomies"]
    overrides = _train_overrides(name, opts)
    phantoms = PhantomConfig(anatomy_model=opts["anatomy_model"])
    ds = open_dataset(training_spec(opts["data_spec"], phantoms), seen, anatomies, ("train", "val"),
                      cache_dir=opts["cache_dir"], phantoms=phantoms)
    cells = [(anatomies, seen)] if opts["training"] == "generalist" else [((a,), (d,)) for a in anatomies for d in seen]
    dev = local_device(resolve_device(opts["device"]))  # under torchrun: this rank's GPU
    for anats, doses in cells:
        job = TrainJob(name, opts["profile"], tuple(doses), tuple(anats), ds.root.name, opts["seed"], overrides)
        man = train_method(job, ds, device=dev, out=opts["out"], retrain=opts["retrain"],
                           time_budget=opts["time_budget"], cache_dir=opts["cache_dir"])
        if not from_env().main:
            continue  # rank 0 speaks for the group
        state = "complete" if man["complete"] else "stopped by the time budget (run again to resume)"
        click.echo(f"{name} [{'+'.join(anats)} @ {dose_labels(doses)}]: {state}; {man['wall_time_s']} s; "
                   f"final {man['final']}; in {man['dir']}")


def _train_overrides(name: str, opts: dict) -> dict:
    """--set, with --iterations, --plain-loss and --vgg19-weights as shorthands; training uses no inference field."""
    from .config import parse_overrides
    from .methods import get_method

    sugar = [f"{name}.{field}={value}" for field, value in (
        ("iterations", opts["iterations"]), ("balance_cells", False if opts["plain_loss"] else None),
        ("vgg19_weights", opts["vgg19_weights"])) if value is not None]
    overrides = {o.field: o.value for o in parse_overrides(sugar + list(opts["sets"]), (name,))}
    cls = get_method(name)
    cls.configure(opts["profile"], overrides, f"--set {name}.*")  # before any data is simulated
    _, inference = cls.Config.split_overrides(overrides)
    if inference:
        raise ValueError(f"--set {name}.{next(iter(inference))}: that field changes only inference; "
                         "give it to `ldct-bench run`, which applies it to the trained weights.")
    return overrides


@main.command("run")
@click.option("--methods", "methods_spec", default="all", show_default=True,
              help="'all', 'every' ('all' and the methods too slow for it) or a comma list.")
@click.option("--doses", default=None, callback=_doses, help="Doses to evaluate (default 5,10,25,50; paper preset: eight).")
@click.option("--train-doses", default=None, callback=_doses, help="Seen doses (default 10,50; paper: 1/2,1/4,1/6,1/10).")
@click.option("--preset", type=click.Choice(["default", "paper"]), default="default", show_default=True,
              help="Dose protocol preset; --doses/--train-doses override it.")
@click.option("--anatomies", default=None, callback=_anatomies,
              help="Anatomies to evaluate (default: every one the --data dataset holds).")
@click.option("--train-anatomies", default=None, callback=_anatomies,
              help="Anatomies training sees (default: every one the training data holds); "
                   "the others are scored as unseen anatomies.")
@click.option("--train-acquisitions", default=None,
              help="Train on the embedded phantoms through these acquisition profiles, comma-separated (the same as "
                   "--train-data embedded@A,B); rows of --data through another profile are seen_acquisition=False.")
@click.option("--acquisitions", default=None,
              help="Evaluate the embedded phantoms through each of these acquisition profiles (comma list, or 'all'): "
                   "one run per profile in --out/PROFILE, the methods trained once (on --train-data or "
                   "--train-acquisitions; default every profile); `ldct-bench report OUT` reads them together.")
@click.option("--train-data", default=None,
              help="Train on this dataset and evaluate on every patient of --data (default: --data's own training "
                   "split; plain 'embedded' trains through every acquisition profile); rows are marked "
                   "seen_data=False.")
@click.option("--profile", type=click.Choice(PROFILES), default="quick", show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run folder (default results/runs/<time>).")
@click.option("--retrain", is_flag=True, help="Train every method anew instead of using saved checkpoints.")
@click.option("--rescore", "rescore_spec", default=None,
              help="Comma list of methods whose scores already in --out are made again with the same checkpoint "
                   "(after a change to their inference code, or to time them on an idle machine); given again on "
                   "a resumed run, it starts them over.")
@click.option("--oracle", is_flag=True,
              help="Also train each learned method on each unseen dose alone (costly) and report the generalization "
                   "gap: specialist minus generalist.")
@click.option("--metrics", "metrics_spec", default=None, help="Comma list (default: rmse,psnr,ssim).")
@click.option("--save-images", is_flag=True, help="Also save every denoised test slice.")
@click.option("--resample", is_flag=True,
              help="Denoise each patient whose pixel size lies outside what a method was trained at at that training "
                   "pixel size, resampled there and back.")
@click.option("--iq", is_flag=True,
              help="Also measure task-based image quality on a CCT189-like phantom: CHO detectability (d', AUC) of "
                   "low-contrast disks, noise power spectrum and TTF (adds to an existing run folder).")
@click.option("--iq-realisations", type=click.IntRange(min=8), default=100, show_default=True,
              help="Phantom scans per class (signal present, signal absent) at each dose for --iq.")
@click.option("--executor", type=click.Choice(["local", "slurm"]), default=None,
              help="Run each (method, anatomy) unit as a submitit job (default: all in this process).")
@click.option("--partition", default=None, help="SLURM partition for --executor slurm.")
@click.option("--gpus-per-job", type=int, default=0, show_default=True)
@click.option("--cpus-per-job", type=int, default=2, show_default=True)
@click.option("--mem-gb", type=int, default=16, show_default=True)
@click.option("--time-min", type=int, default=120, show_default=True, help="Time limit of each job.")
@click.option("--status", is_flag=True, help="Show which units of the run at --out are done, running or failed.")
@_set_option
@_data_options
@friendly
def run_cmd(**opts):
    """Run methods over the dose x anatomy matrix, score them, write the results store and print a leaderboard."""

    t0 = time.perf_counter()
    configs = _run_configs(opts)
    if opts["status"]:
        if opts["out"] is None:
            raise click.UsageError("--status needs --out RUN_DIR.")
        from .fanout import unit_states
        from .plan import resolve
        from .results import RunStore

        for config in configs:
            if len(configs) > 1:
                click.echo(f"{config.out.name}:")
            click.echo(unit_states(RunStore(config.out), resolve(config).entries).to_string(index=False))
        return
    for config in configs:
        _run_one(config, opts, t0)
    if len(configs) > 1:
        click.echo(f"{len(configs)} runs, one per acquisition, in {configs[0].out.parent}; read them together with "
                   f"`ldct-bench report {configs[0].out.parent}`")


def _run_one(config, opts: dict, t0: float) -> None:
    from .report.leaderboard import summary_text
    from .runner import run_matrix

    proto = config.protocol
    click.echo(f"methods: {', '.join(config.methods)}; doses: {dose_labels(proto.doses)} "
               f"(seen: {dose_labels(proto.seen_doses)}); anatomies: {', '.join(proto.anatomies)} "
               f"(trained: {', '.join(proto.trained_anatomies)}); data: {config.data} "
               f"(trained on: {config.trained_on}); "
               f"device: {config.device}; out: {config.out}")
    specialists = [e.label for e in config.entries() if e.label not in config.methods]
    if config.oracle:
        click.echo(f"oracle specialists: {', '.join(specialists)}" if specialists else
                   "--oracle: every evaluated dose is seen in training, so there is no specialist to train.")
    if opts["executor"]:
        from .fanout import ClusterOptions, JobsIncomplete, run_matrix_jobs

        options = ClusterOptions(*(opts[k] for k in ("partition", "gpus_per_job", "cpus_per_job", "mem_gb", "time_min")))
        try:
            table = run_matrix_jobs(config, opts["executor"], options, cli_args=_cli_args(), echo=click.echo)
        except JobsIncomplete as exc:
            raise click.ClickException(str(exc)) from None
    else:
        table = run_matrix(config, cli_args=_cli_args(), echo=click.echo)
    click.echo(summary_text(table))
    click.echo(f"results: {config.out}  ({len(table)} rows; wall time {time.perf_counter() - t0:.1f} s)")


def _run_configs(opts: dict) -> list:
    """The RunConfig of each run `ldct-bench run` makes: one, or with --acquisitions one per profile (in
    --out/PROFILE, all trained on the same data, so each learned method is trained once)."""
    if not opts["acquisitions"]:
        return [_run_config(opts)]
    from .data.acquisition import ACQUISITIONS
    from .data.resolve import embedded_acquisitions

    if opts["data_spec"] != "embedded":
        raise click.UsageError(f"--acquisitions simulates the embedded phantoms through each profile; it cannot "
                               f"evaluate --data {opts['data_spec']} (for one profile, --data embedded@NAME).")
    spec = ",".join(ACQUISITIONS) if opts["acquisitions"] == "all" else opts["acquisitions"]
    try:
        names = embedded_acquisitions(f"embedded@{spec}")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--acquisitions") from None
    out = opts["out"] or Path("results") / "runs" / datetime.now().strftime("run-%Y%m%d-%H%M%S")
    train = opts["train_data"] or (None if opts["train_acquisitions"] else "embedded")
    return [_run_config({**opts, "data_spec": f"embedded@{name}", "out": out / name, "train_data": train})
            for name in names]


def _run_config(opts: dict):
    """The RunConfig of `ldct-bench run`'s options (validated: a bad value is one clear error)."""
    from .config import RunConfig, parse_overrides
    from .data.dataset import PhantomConfig
    from .data.resolve import (
        dataset_anatomies,
        embedded_acquisition,
        embedded_acquisitions,
        imported_path,
        is_embedded,
        lacks_test_split,
    )
    from .metrics import DEFAULT_METRICS
    from .protocol import Protocol
    from .selection import resolve_methods

    base = Protocol.preset(opts["preset"])
    methods = tuple(resolve_methods(opts["methods_spec"]))
    jobs_elsewhere = opts["executor"] == "slurm" and opts["gpus_per_job"]
    data, train_data = opts["data_spec"], opts["train_data"]
    if opts["train_acquisitions"]:
        if train_data is not None and not is_embedded(train_data):
            raise click.UsageError("--train-acquisitions simulates the embedded phantoms through each profile; it "
                                   "cannot be combined with an imported --train-data.")
        train_data = f"embedded@{opts['train_acquisitions']}"
    train_flag = "--train-acquisitions" if opts["train_acquisitions"] else "--train-data"
    for flag, spec in (("--data", data), (train_flag, train_data)):
        try:
            if is_embedded(spec):
                (embedded_acquisition if flag == "--data" else embedded_acquisitions)(spec)
            elif spec is not None:
                imported_path(spec, opts["cache_dir"], flag)  # a missing folder is named by the flag that gave it
        except ValueError as exc:
            raise ValueError(f"{flag} {spec}: {exc}") from None
    anatomies = opts["anatomies"] or dataset_anatomies(data, opts["cache_dir"])
    if train_data is None and (alone := lacks_test_split(data, anatomies, opts["cache_dir"])):
        train_data = "embedded"  # a few slices cannot be split into training and test: they are all test data
        click.echo(f"--data {data}: no test patients of {', '.join(alone)} (too few to split), so every patient is "
                   "scored by methods trained on the embedded phantoms (--train-data embedded)")
    elsewhere = train_data is not None and train_data != data
    # a generalist learns every anatomy its training data holds, whichever of them this run evaluates
    trained = opts["train_anatomies"] or dataset_anatomies(train_data if elsewhere else data, opts["cache_dir"])
    doses, seen = _imported_doses(opts, data, anatomies, elsewhere)
    return RunConfig(
        methods=methods,
        out=opts["out"] or Path("results") / "runs" / datetime.now().strftime("run-%Y%m%d-%H%M%S"),
        protocol=Protocol(doses or base.doses, seen or base.seen_doses, anatomies, trained),
        data=data, train_data=train_data, profile=opts["profile"], seed=opts["seed"],
        metrics=tuple(split_list(opts["metrics_spec"])) if opts["metrics_spec"] else DEFAULT_METRICS,
        retrain=opts["retrain"], oracle=opts["oracle"], overrides=parse_overrides(opts["sets"], methods),
        device="cuda" if jobs_elsewhere else resolve_device(opts["device"]), cache_dir=opts["cache_dir"],
        phantoms=PhantomConfig(anatomy_model=opts["anatomy_model"]),
        save_images=opts["save_images"], iq=opts["iq"], iq_realisations=opts["iq_realisations"],
        resample=opts["resample"], rescore=tuple(split_list(opts["rescore_spec"])) if opts["rescore_spec"] else ())


def _imported_doses(opts: dict, data: str, anatomies, elsewhere: bool) -> tuple[tuple | None, tuple | None]:
    """--doses and --train-doses; on imported data without them, the doses the dataset holds and (when it is also the
    training data) every other one of them from the highest down as the seen set, said on the terminal."""
    from .data.resolve import alternate_seen, dataset_doses

    doses, seen = opts["doses"], opts["train_doses"]
    held = None if doses else dataset_doses(data, anatomies, opts["cache_dir"])
    if held:
        doses = held
        if not seen and not elsewhere:
            seen = alternate_seen(held)
        click.echo(f"--data {data}: evaluating the doses it holds, {dose_labels(doses)}"
                   + (f"; training on {dose_labels(seen)} (every other dose from the highest; set --train-doses "
                      "to choose)" if seen and not opts["train_doses"] else ""))
    return doses, seen


# ------------------------------------------------------------------------------------------- denoise
@main.command("denoise")
@click.option("--method", "method_name", required=True, help="A registered method (see `ldct-bench methods`).")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="Its weights.safetensors (default: the committed reference checkpoint).")
@click.option("--in", "src", type=click.Path(path_type=Path), required=True, help="Folder of CT DICOM series.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Where the denoised series go.")
@click.option("--device", default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--resample/--no-resample", default=False, show_default=True,
              help="Where a series' pixel size lies outside what the model was trained at, run the model at its "
                   "training pixel size and resample back.")
@friendly
def denoise_cmd(method_name, checkpoint, src, out, device, batch_size, seed, resample):
    """Apply a trained method to your own DICOM series and write denoised DICOM (resumable)."""
    from .denoise import denoise_folder

    denoise_folder(method_name, src, out, checkpoint, resolve_device(device), batch_size, seed, echo=click.echo,
                   resample=resample)


# -------------------------------------------------------------------------------------------- report
@main.command("report")
@click.argument("run_dirs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Default: <first run>/report.")
@click.option("--format", "formats", default="html,latex,csv,md", show_default=True)
@click.option("--metrics", "metrics_spec", default="psnr,ssim,rmse", show_default=True)
@click.option("--window", default="founddiff", show_default=True)
@click.option("--reference", type=click.Choice(["full_dose", "truth"]), default="full_dose", show_default=True,
              help="Score against the full-dose scan (the papers' convention) or the noiseless truth (simulated data).")
@click.option("--unit", type=click.Choice(["patient", "slice"]), default="patient", show_default=True,
              help="Statistical unit of the paired tests: per-patient means (t-test) or slices (Wilcoxon, on request).")
@friendly
def report_cmd(run_dirs, out, formats, metrics_spec, window, reference, unit):
    """Leaderboards (Markdown, LaTeX, HTML, CSV) and figures from one or more run folders."""
    from .report import make_report
    from .results import run_folders

    if not run_dirs:
        runs = sorted(Path("results/runs").glob("*/results.parquet"), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise click.ClickException("no run folders given and none under results/runs; run `ldct-bench run` first.")
        run_dirs = (runs[-1].parent,)
    runs = [run for d in run_dirs for run in run_folders(Path(d))]  # a folder of runs (--acquisitions): each
    out = out or Path(run_dirs[0]) / "report"
    files = make_report(runs, out, tuple(split_list(formats)), tuple(split_list(metrics_spec)), window,
                        reference, unit)
    click.echo(f"report written to {out} ({len(files)} files)")


# --------------------------------------------------------------------------------------------- bench
@main.command("bench")
@click.option("--device", default="cpu", show_default=True,
              help="cpu or cuda[:N] (inference and training; on CUDA the simulation stage also times the GPU).")
@click.option("--size", type=click.Choice(["256", "512"]), default="512", show_default=True)
@click.option("--methods", "methods_spec", default="all", show_default=True,
              help="Methods for the inference and training stages.")
@click.option("--profile", type=click.Choice(PROFILES), default="quick", show_default=True,
              help="Network size (and, for training, batch and patch size) the inference and training stages time.")
@click.option("--stages", default="simulation,metrics,inference,import,iq,acquisition,anatomy", show_default=True,
              help="Any of simulation, metrics, inference, training, import, iq, acquisition, anatomy.")
@click.option("--end-to-end", is_flag=True, help="Also time the default `ldct-bench run` (a few minutes).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Where to write OUT.csv and OUT.json (default results/bench/bench-<time>).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None)
@friendly
def bench_cmd(device, size, methods_spec, profile, stages, end_to_end, out, cache_dir):
    """Throughput of each stage beside a reference measured in the same run; peak memory."""
    from datetime import datetime

    from .bench import STAGES, run_bench
    from .selection import resolve_methods

    chosen = tuple(split_list(stages))
    bad = [s for s in chosen if s not in STAGES]
    if bad:
        raise click.BadParameter(f"unknown stage {', '.join(bad)}; choose from {', '.join(STAGES)}.")
    out = out or Path("results") / "bench" / datetime.now().strftime("bench-%Y%m%d-%H%M%S")
    run_bench(int(size), resolve_device(device), resolve_methods(methods_spec), end_to_end, out, cache_dir, chosen,
              profile, echo=click.echo)
