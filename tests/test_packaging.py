"""What the wheel holds (pyproject.toml): every package of the tree, the command line inside the
package's namespace (lagnh_pyg.cli, from cli/), the configs as package data (lagnh_pyg/configs,
from configs/), named by --config; the version written once. `make wheel-check` builds and
installs the wheel itself (.ci/wheel-check.sh)."""

from pathlib import Path

import pytest

from lagnh_pyg.config import CONFIG_DIR, find_config, load_config, shipped_configs
from lagnh_pyg.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _packages_on_disk() -> set[str]:
    """Every folder of lagnh_pyg/ that holds files (Python or data), as a package name, and the
    folders installed into it: cli/ as lagnh_pyg.cli, configs/ as lagnh_pyg.configs."""
    out = set()
    for top, name in ((ROOT / "lagnh_pyg", "lagnh_pyg"), (ROOT / "cli", "lagnh_pyg.cli"),
                      (ROOT / "configs", "lagnh_pyg.configs")):
        for d in [top, *top.rglob("*")]:
            if d.is_dir() and d.name != "__pycache__" and any(f.is_file() for f in d.iterdir()):
                out.add(".".join([name, *d.relative_to(top).parts]))
    return out


def test_the_wheel_lists_every_package_and_nothing_else_at_the_top(pyproject):
    st = pyproject["tool"]["setuptools"]
    assert set(st["packages"]) == _packages_on_disk()
    assert {p.split(".")[0] for p in st["packages"]} == {"lagnh_pyg"}
    assert st["package-dir"] == {"lagnh_pyg.cli": "cli", "lagnh_pyg.configs": "configs"}
    assert pyproject["project"]["scripts"] == {"lagnh": "lagnh_pyg.cli.main:main"}
    data = st["package-data"]
    assert data["lagnh_pyg.configs"] == ["*.yaml"] and data["lagnh_pyg.configs.baselines"] == ["*.yaml"]
    static = {p.suffix for p in (ROOT / "lagnh_pyg/serve/static").iterdir()}
    assert static <= {"." + pat.split(".")[-1] for pat in data["lagnh_pyg.serve.static"]}


def test_the_version_is_written_once(pyproject):
    from lagnh_pyg import __version__

    assert "version" not in pyproject["project"] and pyproject["project"]["dynamic"] == ["version"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "lagnh_pyg.version.__version__"}
    assert isinstance(pyproject["project"]["license"], str)  # an SPDX expression
    assert __version__.count(".") == 2


def test_configs_are_named_or_given_by_path(tmp_path):
    assert CONFIG_DIR == ROOT / "configs"  # a checkout; the wheel's are lagnh_pyg/configs (wheel-check)
    assert {"demo", "coco", "nuswide"} <= set(shipped_configs())
    assert "cibhash" in shipped_configs("baseline")
    assert find_config("demo") == find_config("demo.yaml") == CONFIG_DIR / "demo.yaml"
    assert find_config("tbh", "baseline") == CONFIG_DIR / "baselines" / "tbh.yaml"
    mine = tmp_path / "demo"
    mine.write_text("train:\n  epochs: 3\n")
    assert find_config(mine) == mine  # an existing file wins over a name
    assert load_config("coco").model.hidden == load_config(CONFIG_DIR / "coco.yaml").model.hidden
    for bad in ("demo2", "configs/nope.yaml", "tbh"):
        with pytest.raises(InputError, match="neither a YAML file nor the name of a shipped config"):
            find_config(bad)


def test_commands_take_config_names_and_refuse_bad_ones_before_any_work(small_synthetic, tmp_path):
    from helpers import error_line
    from typer.testing import CliRunner

    from lagnh_pyg.cli.main import app

    run = CliRunner()
    error_line(run.invoke(app, ["train", str(small_synthetic), "--config", "demo2", "--bits", "8", "--out",
                                str(tmp_path / "r")]), "neither a YAML file nor the name of a shipped config")
    error_line(run.invoke(app, ["train", str(tmp_path / "no-data"), "--config", "demo", "--bits", "8", "--out",
                                str(tmp_path / "r"), "--set", "graph.k=0"]), "graph.k must be at least 1")
    error_line(run.invoke(app, ["baseline", "itq", str(small_synthetic), "--bits", "8", "--out", str(tmp_path / "b"),
                                "--config", "tbh"]), "itq has no parameter")
    # index-folder checks its config before extracting anything from the pictures
    error_line(run.invoke(app, ["index-folder", str(tmp_path / "no-photos"), "--out", str(tmp_path / "p"),
                                "--set", "train.epochs=-1"]), "train.epochs must be")
    error_line(run.invoke(app, ["experiment", "accuracy", "--data", str(small_synthetic), "--out",
                                str(tmp_path / "e"), "--methods", "itq", "--bits", "8", "--config", "nope"]),
               "neither a YAML file")
    assert not any(tmp_path.iterdir())
