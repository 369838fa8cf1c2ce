""".ci/link_torch.py: torch's files shared by hard links between venvs (CI's disk), on a fake
site-packages: the heavy packages linked whole with their .dist-info, the rest left to pip,
nothing half-linked when a link fails."""

import importlib.util
import os
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("link_torch", ROOT / ".ci" / "link_torch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _dist(site: Path, name: str, version: str, files: dict[str, str], outside=()):
    """A dist as pip leaves it: its files, METADATA and a RECORD naming them (and `outside`)."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    rows = [*files, *outside, f"{info.name}/METADATA", f"{info.name}/RECORD"]
    (info / "RECORD").write_text("".join(f"{r},,\n" for r in rows))


@pytest.fixture
def sites(tmp_path):
    src, dst = (tmp_path / venv / "lib" / "site-packages" for venv in ("src", "dst"))
    dst.mkdir(parents=True)
    _dist(src, "torch", "2.14.1", {"torch/__init__.py": "T", "torch/lib/libtorch.so": "L"},
          outside=["../../bin/torchrun"])
    _dist(src, "nvidia-cublas", "13.1", {"nvidia/cublas/lib/libcublas.so": "C"})
    _dist(src, "cuda-toolkit", "13.0", {"cuda/toolkit.py": "K"})
    _dist(src, "numpy", "2.4.0", {"numpy/__init__.py": "N"})
    _dist(src, "torch-geometric", "2.8.1", {"torch_geometric/__init__.py": "G"})
    (src.parents[1] / "bin").mkdir()
    (src.parents[1] / "bin" / "torchrun").write_text("#!/src/venv/bin/python")
    return src, dst


def _names(site):
    return {d.metadata["Name"]: d.version for d in metadata.distributions(path=[str(site)])}


def test_links_the_heavy_packages_whole_and_leaves_the_rest(sites, capsys):
    src, dst = sites
    assert _load().link(dst.parent, src_base=src, dst_base=dst) == 0
    # what pip sees as installed there: torch and the CUDA packages, at their versions
    assert _names(dst) == {"torch": "2.14.1", "nvidia-cublas": "13.1", "cuda-toolkit": "13.0"}
    for rel in ("torch/__init__.py", "torch/lib/libtorch.so", "nvidia/cublas/lib/libcublas.so",
                "cuda/toolkit.py", "torch-2.14.1.dist-info/RECORD"):
        assert os.path.samefile(src / rel, dst / rel)  # one file, two names: no new disk
    assert not (dst / "numpy").exists() and not (dst / "torch_geometric").exists()
    assert (src.parents[1] / "bin" / "torchrun").is_file() and not (dst.parents[1] / "bin").exists()  # console scripts name the source venv's python
    assert "torch 2.14.1 and 2 more packages" in capsys.readouterr().out
    # run again: nothing to do, nothing broken
    assert _load().link(dst.parent, src_base=src, dst_base=dst) == 0
    assert _names(dst) == {"torch": "2.14.1", "nvidia-cublas": "13.1", "cuda-toolkit": "13.0"}


def test_a_package_installed_there_already_is_left_alone(sites):
    src, dst = sites
    _dist(dst, "torch", "2.13.0", {"torch/__init__.py": "old"})
    _load().link(dst.parent, src_base=src, dst_base=dst)
    assert _names(dst)["torch"] == "2.13.0" and (dst / "torch/__init__.py").read_text() == "old"
    assert not (dst / "torch/lib/libtorch.so").exists()
    assert "nvidia-cublas" in _names(dst)


def test_a_failed_link_leaves_nothing_half_linked(sites, monkeypatch, capsys):
    src, dst = sites
    mod = _load()
    real, calls = os.link, []

    def link(a, b):  # the second file of the first package fails, as across file systems
        calls.append(b)
        if len(calls) == 2:
            raise OSError(18, "Invalid cross-device link")
        real(a, b)

    monkeypatch.setattr(mod.os, "link", link)
    assert mod.link(dst.parent, src_base=src, dst_base=dst) == 0
    assert _names(dst) == {}  # pip will install all of it itself
    assert not [p for p in dst.rglob("*") if p.is_file()]
    assert "cannot hard-link" in capsys.readouterr().out


def test_a_python_without_torch_links_nothing(tmp_path, monkeypatch, capsys):
    mod = _load()

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(mod.metadata, "distribution", missing)
    assert mod.link(tmp_path, dst_base=tmp_path) == 0
    assert not any(tmp_path.iterdir()) and "no torch beside" in capsys.readouterr().out
