"""Out-of-tree plug-ins: entry points (loaded lazily, once; a broken one is a clear error naming
its distribution), the config's ``plugins:`` list (validated, imported, threaded to worker
processes, not part of any cell's identity), origins in ``poisonbench list``, and a run that
names a plug-in worker processes cannot see."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from attacks import ATTACKS
from bench.core.types import (
    BUILTIN,
    Plugin,
    PluginLoadError,
    Registry,
    UnknownNameError,
    registering_from,
)
from bench.data.datasets import DATASETS
from bench.interfaces.cli import main
from bench.models import MODELS
from bench.run.config import ConfigError, parse_config
from bench.run.grid import Cell, expand, make_tasks
from defenses import DEFENSES

ROOT = Path(__file__).resolve().parents[1]
REGISTRIES = (ATTACKS, DEFENSES, MODELS, DATASETS)


@pytest.fixture
def isolated():
    """Undo what importing plug-in modules does to this process: the names they registered and
    the modules themselves (so the next test imports, and registers, afresh)."""
    before = [set(r) for r in REGISTRIES]
    modules = set(sys.modules)
    yield
    for registry, names in zip(REGISTRIES, before, strict=True):
        for name in set(registry) - names:
            registry.unregister(name)
    for name in set(sys.modules) - modules:
        if name.startswith(("tests.plugin", "pbtest_")):
            del sys.modules[name]


def tiny_config(**overrides) -> dict:
    config = {
        "name": "plug",
        "datasets": [{"name": "iris", "split": {"train": 60, "test": 45}}],
        "models": ["logreg"],
        "attacks": [{"name": "label_flip", "mode": "random"}],
        "rates": [0, 0.2],
        "defenses": ["none", "centroid_filter"],
        "seeds": 1,
        "recovery": {"fractions": [0, 0.5], "bootstrap": 20},
        "plugins": ["tests.plugin_defense"],
    }
    config.update(overrides)
    return config


def without_timings(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=[c for c in table.columns if c.startswith("t_")])


# ---------------------------------------------------------------------------------------------
# The registry: origins, re-registration, entry points
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thing(Plugin):
    """A plug-in defined in this test module."""


def test_origins_are_recorded_at_registration():
    reg = Registry("thing")
    reg.register("plain")(Thing)
    assert reg.origin("plain") == f"python: {__name__}"
    with registering_from("plugins: mypkg.stuff"):

        @reg.register("from_module")
        @dataclass(frozen=True)
        class Other(Plugin):
            pass

    assert reg.origin("from_module") == "plugins: mypkg.stuff"
    assert DEFENSES.origin("iforest") == BUILTIN
    assert MODELS.origin("logreg") == BUILTIN and DATASETS.origin("iris") == BUILTIN
    with pytest.raises(UnknownNameError, match="unknown thing 'nope'"):
        reg.origin("nope")


def test_a_rerun_definition_replaces_but_another_class_is_refused():
    reg = Registry("thing")

    def define():  # the same module and qualified name each time: a notebook cell run again
        @dataclass(frozen=True)
        class Again(Plugin):
            pass

        return Again

    first, second = define(), define()
    reg.register("again")(first)
    reg.register("again")(second)
    assert reg.get("again") is second
    with pytest.raises(ValueError, match=r"'again' is registered twice \(first from python: "):
        reg.register("again")(Thing)


def write_distribution(site: Path, name: str, group: str, entries: dict[str, str]) -> None:
    """A minimal installed distribution (``*.dist-info``) declaring entry points in ``group``."""
    info = site / f"{name.replace('-', '_')}-0.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.3\n")
    body = "".join(f"{key} = {value}\n" for key, value in entries.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{body}")


@pytest.fixture
def site(tmp_path, monkeypatch, isolated):
    """A directory on sys.path holding modules and distributions the test writes."""
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    return tmp_path


def test_entry_points_load_lazily_once_and_name_the_distribution(site, monkeypatch):
    group = "poisonbench.test_things"
    (site / "pbtest_good.py").write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass
            from bench.core.types import Plugin

            @dataclass(frozen=True)
            class Good(Plugin):
                '''A plug-in class the entry point names (no decorator).'''
                k: int = 3
            """
        )
    )
    (site / "pbtest_broken.py").write_text("import pbtest_missing_dependency\n")
    write_distribution(
        site,
        "pbtest-plugins",
        group,
        {"good": "pbtest_good:Good", "broken": "pbtest_broken:Thing"},
    )
    calls = []
    real = importlib.metadata.entry_points

    def counting(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", counting)
    reg = Registry("thing", group=group)
    reg.register("builtin_thing")(Thing)
    # a name it holds: no scan, no import (plain-name configs stay cheap)
    assert reg.get("builtin_thing") is Thing and "builtin_thing" in reg
    assert calls == [] and "pbtest_good" not in sys.modules
    good = reg.get("good")
    assert good.__name__ == "Good" and good.name == "good"
    assert reg.origin("good") == "entry point pbtest-plugins"
    assert calls == [{"group": group}]
    with pytest.raises(PluginLoadError) as info:
        reg.get("broken", "defenses[1]")
    message = str(info.value)
    assert message.startswith("defenses[1]: entry point 'broken' = 'pbtest_broken:Thing'")
    assert "distribution pbtest-plugins 0.3" in message
    assert "failed to load: ModuleNotFoundError: No module named 'pbtest_missing_dependency'" in (
        message
    )
    with pytest.raises(UnknownNameError, match="entry points that failed to load: broken"):
        reg.get("nope")
    assert set(reg) == {"builtin_thing", "good"}
    assert list(reg.entry_point_errors) == ["broken"]
    assert len(calls) == 1, "entry points are read once per registry"


def test_an_entry_point_may_not_take_a_builtin_name(site):
    group = "poisonbench.test_clash"
    (site / "pbtest_clash.py").write_text(
        "from dataclasses import dataclass\nfrom bench.core.types import Plugin\n\n"
        "@dataclass(frozen=True)\nclass Clash(Plugin):\n    pass\n"
    )
    write_distribution(site, "pbtest-clash", group, {"none": "pbtest_clash:Clash"})
    reg = Registry("thing", group=group)
    reg.register("none")(Thing)
    assert reg.get("none") is Thing
    assert "registered twice" in reg.entry_point_errors["none"]
    assert reg.origin("none") == f"python: {__name__}"


def test_a_config_naming_a_broken_entry_point_names_it(site, monkeypatch, capsys):
    write_distribution(
        site, "pbtest-broken-defense", "poisonbench.defenses", {"shiny": "pbtest_nothere:X"}
    )
    DEFENSES.load_entry_points(refresh=True)  # as after `pip install` in a running session
    try:
        with pytest.raises(ConfigError) as info:
            parse_config(tiny_config(defenses=["none", "shiny"], plugins=[]))
        assert info.value.field == "defenses[1]"
        assert "entry point 'shiny' = 'pbtest_nothere:X'" in info.value.message
        assert "distribution pbtest-broken-defense 0.3" in info.value.message
        assert main(["list"]) == 2  # the others are listed, the broken one named
        out, err = capsys.readouterr()
        assert re.search(r"^\s+iforest\s.*\[builtin\]$", out, re.M)
        assert err.startswith("error: entry point 'shiny' = 'pbtest_nothere:X'")
    finally:
        monkeypatch.undo()  # the distribution leaves sys.path
        DEFENSES.load_entry_points(refresh=True)
    assert "shiny" not in DEFENSES.entry_point_errors


def test_plain_name_configs_never_read_entry_points():
    """Parsing, expanding and running a config of built-in names scans no installed
    distribution (entry points are read only for a name the registries lack)."""
    code = textwrap.dedent(
        """
        import importlib.metadata

        real = importlib.metadata.entry_points

        def refuse(**kwargs):  # other libraries (narwhals, via scikit-learn) read their own
            if str(kwargs.get("group", "")).startswith("poisonbench."):
                raise AssertionError(f"entry points were read: {kwargs}")
            return real(**kwargs)

        importlib.metadata.entry_points = refuse
        from bench.run.config import load_config
        from bench.run.grid import expand
        from bench.run.runner import run_cell

        grid = expand(load_config("configs/quick.yaml"))
        record = run_cell(grid.cells[-1], [0.0])
        print("STATUS", record["status"], record.get("error"))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stderr
    assert "STATUS ok" in out.stdout


# ---------------------------------------------------------------------------------------------
# plugins: in configs
# ---------------------------------------------------------------------------------------------


def test_plugins_are_imported_before_the_names_are_checked(isolated):
    with pytest.raises(ConfigError, match=r"defenses\[1\]: unknown defense 'centroid_filter'"):
        parse_config(tiny_config(plugins=[]))
    config = parse_config(tiny_config())
    assert config.plugins == ("tests.plugin_defense",)
    assert config.defenses[1][0].params == {"fraction": 0.1}
    assert DEFENSES.origin("centroid_filter") == "plugins: tests.plugin_defense"


@pytest.mark.parametrize(
    ("plugins", "field", "message"),
    [
        ("tests.plugin_defense", "plugins", "expected a list of module names"),
        (["tests/plugin_defense.py"], "plugins[0]", "expected a module name like package.module"),
        (["tests.plugin_nets:make_net"], "plugins[0]", "expected a module name"),
        ([3], "plugins[0]", "expected a module name"),
        (
            ["json", "pbtest_no_such_module"],
            "plugins[1]",
            "no module named 'pbtest_no_such_module'",
        ),
        (
            ["tests.plugin_broken"],
            "plugins[0]",
            "importing 'tests.plugin_broken' failed: ModuleNotFoundError: No module named "
            "'poisonbench_no_such_dependency'",
        ),
    ],
)
def test_bad_plugins_are_config_errors_naming_the_entry(plugins, field, message, isolated):
    with pytest.raises(ConfigError) as info:
        parse_config(tiny_config(plugins=plugins))
    assert info.value.field == field
    assert message in info.value.message


def test_a_module_that_fails_on_import_is_named(tmp_path, monkeypatch, isolated):
    (tmp_path / "pbtest_raises.py").write_text("raise RuntimeError('no licence key')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as info:
        parse_config(tiny_config(plugins=["pbtest_raises"]))
    assert str(info.value) == (
        "plugins[0]: importing 'pbtest_raises' failed: RuntimeError: no licence key"
    )
    assert isinstance(info.value.__cause__, RuntimeError)  # Python callers keep the traceback


def test_the_plugin_list_is_not_part_of_cell_identity(isolated):
    one = expand(parse_config(tiny_config(plugins=["tests.plugin_defense", "json"])))
    two = expand(parse_config(tiny_config(plugins=["json", "tests.plugin_defense", "json"])))
    assert [c.cell_id for c in one.cells] == [c.cell_id for c in two.cells]
    assert all("plugins" not in c.spec for c in one.cells)


def test_a_worker_that_cannot_import_a_plugin_fails_its_cells_with_the_reason(isolated):
    from bench.run.runner import run_task

    grid = expand(parse_config(tiny_config()))
    (task,) = make_tasks([(grid.cells[0], (0.0,))], plugins=["pbtest_not_on_this_worker"])
    payload = task.payload()
    assert payload["plugins"] == ["pbtest_not_on_this_worker"]
    assert [spec for spec, _ in payload["cells"]] == [grid.cells[0].spec]
    (record,) = run_task(payload)
    assert record["status"] == "failed"
    assert "plugins[0]: no module named 'pbtest_not_on_this_worker'" in record["error"]
    assert "every worker must be able to import it" in record["error"]
    assert record["cell_id"] == Cell(task.items[0][0].spec).cell_id


@pytest.mark.timeout(300)
def test_a_plugin_config_runs_in_process_and_in_workers(tmp_path, isolated):
    path = tmp_path / "plug.yaml"
    path.write_text(yaml.safe_dump(tiny_config()))
    tables = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        assert main(["run", str(path), "--out", str(out), "--jobs", str(jobs), "-q"]) == 0
        table = pd.read_parquet(out / "results.parquet")
        assert set(table["status"]) == {"ok"}, table.loc[table["status"] != "ok", "error"]
        assert "centroid_filter" in set(table["defense"])
        filtered = table[table["defense"] == "centroid_filter"]
        assert (filtered["n_removed"] == 6).all()  # round(0.1 × 60) rows
        meta = yaml.safe_load((out / "run.json").read_text())
        assert meta["plugins"] == {
            "modules": ["tests.plugin_defense"],
            "used": [
                {
                    "kind": "defense",
                    "name": "centroid_filter",
                    "origin": "plugins: tests.plugin_defense",
                }
            ],
        }
        tables[jobs] = without_timings(table)
    pd.testing.assert_frame_equal(tables[1], tables[2])


@pytest.mark.dask
@pytest.mark.timeout(300)
def test_a_plugin_config_runs_on_dask_workers(tmp_path, isolated):
    from conftest import require

    require("distributed")
    path = tmp_path / "plug.yaml"
    path.write_text(yaml.safe_dump(tiny_config()))
    tables = {}
    for executor in ("local", "dask-local"):
        out = tmp_path / executor
        argv = ["run", str(path), "--out", str(out), "-q", "--executor", executor]
        assert main([*argv, "--workers", "2"] if executor != "local" else argv) == 0
        table = pd.read_parquet(out / "results.parquet")
        assert set(table["status"]) == {"ok"}, table.loc[table["status"] != "ok", "error"]
        tables[executor] = without_timings(table)
    pd.testing.assert_frame_equal(tables["local"], tables["dask-local"])


def test_list_shows_origins_and_imports_a_configs_plugins(tmp_path, capsys, isolated):
    path = tmp_path / "plug.yaml"
    path.write_text(yaml.safe_dump(tiny_config()))
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "centroid_filter" not in text
    lines = [line for line in text.splitlines() if line.startswith("  iforest ")]
    assert len(lines) == 1 and lines[0].endswith("[builtin]")
    assert main(["list", "--config", str(path)]) == 0
    text = capsys.readouterr().out
    (line,) = [line for line in text.splitlines() if line.startswith("  centroid_filter ")]
    assert line.endswith("[plugins: tests.plugin_defense]")
    assert "      fraction: float = 0.1" in text


def test_list_with_a_bad_plugins_entry_is_an_error(tmp_path, capsys, isolated):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tiny_config(plugins=["pbtest_no_such_module"])))
    assert main(["list", "--config", str(path)]) == 2
    assert "error: plugins[0]: no module named 'pbtest_no_such_module'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Plug-ins worker processes cannot see
# ---------------------------------------------------------------------------------------------


def test_a_plugin_registered_by_running_code_is_refused_for_workers(tmp_path, isolated):
    import tests.plugin_defense as module
    from bench.run.orchestrate import run_config

    @DEFENSES.register("session_centroid")
    @dataclass(frozen=True)
    class SessionCentroid(module.CentroidFilter):
        """The centroid filter, registered by running code (as a notebook cell would)."""

    assert DEFENSES.origin("session_centroid") == f"python: {__name__}"
    config = parse_config(tiny_config(defenses=["none", "session_centroid"]))
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as info:
        run_config(config, out, jobs=2, progress=False)
    assert info.value.field == "defenses[1]"
    message = info.value.message
    assert f"defense 'session_centroid' was registered in {__name__}" in message
    assert "the 2 worker processes cannot see" in message
    assert f"plugins: [{__name__}]" in message
    assert not list(out.rglob("*.json")), "nothing may run before the refusal"
    summary = run_config(config, out, jobs=1, progress=False)  # in this process it runs
    assert summary.n_failed == 0 and summary.n_run == len(expand(config)) == 4
