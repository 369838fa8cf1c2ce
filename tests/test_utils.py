"""Atomic writes, the replace guard, strict text and .npy reading (lagnh_pyg.files, lagnh_pyg.ownership, lagnh_pyg.runtime)."""

import errno
import json
import os

import numpy as np
import pytest

from lagnh_pyg.errors import InputError, LagnhError
from lagnh_pyg.files import atomic_dir, atomic_path, load_npy, npy_header, read_text
from lagnh_pyg.ownership import check_writable_target, remove_owned


def _ours(path, fmt="lagnh-dataset"):
    path.mkdir()
    (path / "manifest.json").write_text(json.dumps({"format": fmt}))
    (path / "old.bin").write_bytes(b"old")
    return path


def test_atomic_dir_overwrites_only_its_own_format(tmp_path):
    own = _ours(tmp_path / "own")
    with atomic_dir(own, overwrite=True, formats=("lagnh-dataset",)) as tmp:
        (tmp / "new.bin").write_bytes(b"new")
    assert sorted(p.name for p in own.iterdir()) == ["new.bin"]
    other = _ours(tmp_path / "other", fmt="lagnh-run")
    user = tmp_path / "user"
    user.mkdir()
    (user / "photo.jpg").write_bytes(b"jpeg")
    for target, match in ((other, "found format 'lagnh-run'"), (user, "no lagnh manifest")):
        with pytest.raises(InputError, match=match):
            with atomic_dir(target, overwrite=True, formats=("lagnh-dataset",)):
                pytest.fail("the body must not run")
    assert (user / "photo.jpg").read_bytes() == b"jpeg" and (other / "old.bin").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "own", "user"]  # no temporary left


def test_atomic_dir_never_replaces_a_directory_holding_an_input(tmp_path):
    own = _ours(tmp_path / "own")
    for inp in (own / "old.bin", own, tmp_path / "own"):
        with pytest.raises(InputError, match="holds the input"):
            with atomic_dir(own, overwrite=True, formats=("lagnh-dataset",), inputs=[inp]):
                pass
    assert (own / "old.bin").is_file()


def test_remove_owned(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "a.txt").write_text("a")
    with pytest.raises(InputError, match="refusing to replace"):
        remove_owned(user, ("lagnh-run",), markers=("log.jsonl",))
    (tmp_path / "empty").mkdir()
    remove_owned(tmp_path / "empty", ("lagnh-run",))  # nothing in it to lose
    (user / "log.jsonl").write_text("{}\n")
    remove_owned(user, ("lagnh-run",), markers=("log.jsonl",))
    remove_owned(tmp_path / "missing", ("lagnh-run",))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_atomic_path_cleans_its_temporary_on_every_failure(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("the writer failed")
    (tmp_path / "dir").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        with atomic_path(tmp_path / "dir"):
            pass

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(LagnhError, match="No space left") as e:
        with atomic_path(target) as tmp:
            tmp.write_text("complete")
    assert not isinstance(e.value, InputError)  # a full disk is a failure while running, exit 1
    monkeypatch.undo()
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="cannot write .*file/out.json"):  # under a regular file
        with atomic_path(tmp_path / "file" / "out.json"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file"]


def test_check_writable_target(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    check_writable_target(tmp_path / "new" / "deeper" / "out.html")  # creates nothing
    own = _ours(tmp_path / "run", fmt="lagnh-run")
    with pytest.raises(InputError, match="refusing to overwrite .*part of a lagnh-run directory"):
        check_writable_target(own / "manifest.json", "--json file")
    (tmp_path / "dir" / "page.html").write_text("old")
    check_writable_target(tmp_path / "dir" / "page.html")  # a user's own earlier output: replaced
    assert not (tmp_path / "new").exists()
    with pytest.raises(InputError, match="is a file, not a directory"):
        check_writable_target(tmp_path / "file" / "out.html")
    with pytest.raises(InputError, match="is a directory"):
        check_writable_target(tmp_path / "dir")
    with pytest.raises(InputError, match="is a file"):
        check_writable_target(tmp_path / "file", directory=True)


def test_read_text_names_the_encoding(tmp_path):
    p = tmp_path / "ids.txt"
    p.write_text("a\nb\n", encoding="utf-16")
    with pytest.raises(InputError, match="not UTF-8 text .it looks like UTF-16."):
        read_text(p, "ids")
    p.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="undecodable byte at offset 3"):
        read_text(p, "ids")
    p.write_bytes(b"\xef\xbb\xbfa\nb\n")
    assert read_text(p, "ids") == "a\nb\n"  # a UTF-8 BOM is dropped


def test_npy_header_finds_truncation_without_reading(tmp_path):
    p = tmp_path / "x.npy"
    np.save(p, np.zeros((100, 8), np.float32))
    assert npy_header(p, "x") == ((100, 8), np.dtype(np.float32))
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(InputError, match="truncated"):
        load_npy(p, "x")
    np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="Python objects"):
        load_npy(p, "x")


def _rss_file_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:"))


def test_drop_mapped_pages_releases_a_memory_map_and_keeps_its_values(tmp_path):
    from lagnh_pyg.runtime import drop_mapped_pages

    np.save(tmp_path / "a.npy", np.arange(16 * 2**20, dtype=np.float32))  # 64 MiB
    a = np.load(tmp_path / "a.npy", mmap_mode="r")
    total = float(a.sum(dtype=np.float64))  # every page resident in this process
    before = _rss_file_kib()
    drop_mapped_pages(a[::2])  # a view of the map: its map is found
    assert before - _rss_file_kib() > 48 * 1024
    assert float(a.sum(dtype=np.float64)) == total  # read again from the page cache
    plain = np.ones(1000)
    drop_mapped_pages(plain)  # not a map: left alone
    assert plain.sum() == 1000


def test_line_styles_keep_fourteen_lines_apart(tmp_path):
    """Table 3's P@K figure has 14 lines: (colour of the 10-colour cycle, dash pattern) is unique
    for each, and the figure is written."""
    from lagnh_pyg.report.plots import line_plot, line_style

    pairs = [(i % 10, line_style(i)) for i in range(14)]
    assert len(set(pairs)) == 14 and line_style(0) == "-" and line_style(10) != "-"
    series = {f"m{i}": ([1, 2, 3], [0.1 * i, 0.2, 0.3]) for i in range(14)}
    out = line_plot(tmp_path / "pk.png", series, title="t", xlabel="K", ylabel="P")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
