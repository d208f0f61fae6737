"""The layering the suite promises: methods register through the entry-point door and import only the Method API
and its toolkit; no import circles; one run configuration with validated --set overrides; old caches still load."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ldct_bench.checkpoints import REFERENCE_DIR, find_checkpoint
from ldct_bench.cli import main
from ldct_bench.config import Override, RunConfig, parse_overrides
from ldct_bench.data.dataset import PhantomConfig
from ldct_bench.data.resolve import REFERENCE_TRAINING, dataset_name
from ldct_bench.data.simulate import Simulator
from ldct_bench.methods import get_method
from ldct_bench.plan import resolve

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ldct_bench", "baselines", "founddiff")
BUILTINS = {"ldct", "redcnn", "wganvgg", "wgan-mse", "corediff", "founddiff", "dncnn", "bilateral", "restormer", "tv", "nlm",
            "bm3d"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of our packages it imports (at the top or inside functions)."""
    modules = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def test_the_package_has_no_import_circle():
    graph = import_graph()
    assert len(graph) > 40 and graph["ldct_bench.runner"] >= {"ldct_bench.config", "ldct_bench.evaluate"}
    done, stack = set(), []

    def visit(node):
        if node in stack:
            raise AssertionError("import circle: " + " -> ".join(stack[stack.index(node):] + [node]))
        if node in done:
            return
        stack.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        stack.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)


def test_the_suite_never_imports_its_methods_and_methods_never_import_the_harness():
    graph = import_graph()
    for module, imports in graph.items():
        if module.startswith("ldct_bench"):
            assert not {i for i in imports if i.split(".")[0] in ("baselines", "founddiff")}, module
        else:  # a method may use the Method API and its toolkit (and its own package), nothing else of the suite
            assert {i for i in imports if i.startswith("ldct_bench")} <= {"ldct_bench.methods", "ldct_bench.toolkit"}, \
                (module, imports)


def test_ldct_bench_methods_lists_every_builtin():
    res = CliRunner().invoke(main, ["methods"])
    assert res.exit_code == 0, res.output
    assert {line.split()[0] for line in res.output.splitlines() if not line[:1].isspace()} == BUILTINS  # indented: needs


def test_set_values_take_their_field_types():
    o = parse_overrides(["redcnn.iterations=500", "redcnn.lr=1e-3", "redcnn.balance_cells=false",
                         "founddiff.clip_layers=1,2,2,1", "wgan-mse.content=mse"], ("redcnn", "founddiff", "wgan-mse"))
    assert [x.value for x in o] == [500, 1e-3, False, (1, 2, 2, 1), "mse"]
    assert type(o[0].value) is int and type(o[1].value) is float
    with pytest.raises(ValueError, match="iterations takes an integer"):
        RunConfig(methods=("redcnn",), out=Path("x"), overrides=(Override("redcnn", "iterations", True),))


def test_overrides_that_change_training_name_their_own_checkpoint_and_inference_ones_reuse_it():
    def job(*sets):
        config = RunConfig(methods=("founddiff",), out=Path("x"), overrides=parse_overrides(sets, ("founddiff",)))
        return resolve(config).entry("founddiff").job

    plain = job()
    assert plain.key == f"quick-{dataset_name(REFERENCE_TRAINING)}-seen10+50-abdomen+chest+head-s0"
    assert job("founddiff.sampling_steps=4").key == plain.key  # inference only: the trained weights serve
    longer, other = job("founddiff.dadiff_iterations=10"), job("founddiff.dadiff_iterations=11")
    assert longer.key.startswith(plain.key + "-set") and len({plain.key, longer.key, other.key}) == 3
    assert longer.overrides == {"dadiff_iterations": 10}


def test_an_inference_override_is_applied_to_the_loaded_checkpoint(tmp_path):
    from .helpers import build

    build("founddiff").save(tmp_path / "w.safetensors")
    loaded = get_method("founddiff").load(tmp_path / "w.safetensors", overrides={"sampling_steps": 5})
    assert loaded.sampling_steps == 5 and loaded.config.dadiff_iterations == 2


def test_train_refuses_an_inference_only_field(tmp_path):
    res = CliRunner().invoke(main, ["train", "--method", "founddiff", "--set", "founddiff.sampling_steps=4",
                                    "--cache-dir", str(tmp_path)])
    assert res.exit_code != 0 and "changes only inference" in res.output and not list(tmp_path.iterdir())


def test_stage_budgets_are_declared_by_the_config():
    fd = get_method("founddiff").Config.profile("quick")
    assert [fd.stage_iterations(s) for s in ("daclip", "dadiff")] == [300, 4_000]
    assert [fd.stage_batch_size(s) for s in ("daclip", "dadiff")] == [fd.clip_batch, fd.batch_size] == [8, 4]
    assert get_method("redcnn").Config.profile("quick").stage_iterations("main") == 20_000


def test_old_caches_and_the_committed_checkpoints_are_still_found():
    """The FBP apodisation was renamed `filter_window`: a manifest that says `window` still loads, and the default
    dataset keeps its folder, so the committed reference checkpoints still match the default run."""
    old = {**Simulator().to_dict(), "window": "shepp-logan"}
    del old["filter_window"]
    assert Simulator.from_dict(old).filter_window == "shepp-logan"
    config = RunConfig(methods=("redcnn", "corediff", "wgan-mse", "founddiff"), out=Path("x"))
    data = dataset_name(REFERENCE_TRAINING)  # the clinical phantoms through every acquisition profile (#30)
    assert PhantomConfig().digest() == "9e665be07c6d" and data.startswith("embedded-9e665be07c6d+")
    for name in config.methods:
        found = find_checkpoint(resolve(config).entry(name).job)
        assert found is not None and found.parent.parent == REFERENCE_DIR / name
        assert json.loads((found.parent / "manifest.json").read_text())["data"] == data


def test_a_run_is_resolved_once_and_the_runner_reads_the_plan(monkeypatch):
    """#29.0: the runner, the fan-out and the evaluation never ask the registry or the data resolver again; the
    plan looks each entry's method up once and each dataset spec once."""
    import ldct_bench
    import ldct_bench.plan as plan_module
    from ldct_bench.protocol import Protocol

    again = {"get_method", "dataset_name", "dataset_pixel_mm", "dataset_acquisitions", "imported_path",
             "open_dataset", "find_checkpoint"}
    root = Path(ldct_bench.__file__).parent
    for module in ("runner.py", "fanout.py", "evaluate.py"):
        tree = ast.parse((root / module).read_text())
        called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert not called & again, (module, called & again)
    calls = {"method": 0, "data": 0}
    real_method, real_data = plan_module.get_method, plan_module.dataset_name

    def method(name):
        calls["method"] += 1
        return real_method(name)

    def data(*args, **kw):
        calls["data"] += 1
        return real_data(*args, **kw)

    monkeypatch.setattr(plan_module, "get_method", method)
    monkeypatch.setattr(plan_module, "dataset_name", data)
    config = RunConfig(methods=("ldct", "redcnn", "corediff"), out=Path("x"), oracle=True,
                       protocol=Protocol((0.05, 0.1, 0.25), (0.1,)))
    plan = plan_module.resolve(config)
    assert [e.label for e in plan.entries] == ["ldct", "redcnn", "corediff", "redcnn@5%", "redcnn@25%",
                                               "corediff@5%", "corediff@25%"]
    assert calls == {"method": len(plan.entries), "data": 2}  # the evaluated data, and the training data
    assert plan.entry("redcnn@5%").job.doses == (0.05,) and plan.entry("ldct").job is None
