"""`lagnh dedup` against brute force, and `lagnh add` (resumable, skips unreadable pictures)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from serve_fixtures import *  # noqa: F401,F403 - the run fixtures
from typer.testing import CliRunner

from cli.main import app
from lagnh_pyg.dedup import find_duplicates

runner = CliRunner()


def reference(codes: np.ndarray, ids: list[str], radius: int) -> dict[str, list[str]]:
    bits = np.unpackbits(codes, axis=1).astype(np.int32)
    dist = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    out = {}
    for i in range(len(codes)):
        js = [j for j in np.lexsort((np.arange(len(codes)), dist[i])) if j != i and dist[i, j] <= radius]
        out[ids[i]] = [ids[j] for j in js]
    return out


@pytest.mark.parametrize("radius", [0, 2, 9])
def test_find_duplicates_matches_brute_force(tmp_path, rng, radius):
    base = rng.integers(0, 256, (60, 4), dtype=np.uint8)
    near = base[rng.integers(0, 60, 40)].copy()
    flips = rng.integers(0, 32, (40, 3))
    for r, f in enumerate(flips):  # planted near-duplicates: 0-3 flipped bits
        for b in f[: rng.integers(0, 4)]:
            near[r, b // 8] ^= np.uint8(1 << (7 - b % 8))
    codes = np.concatenate([base, near, base[:5]])
    ids = [f"item-{i}" for i in range(len(codes))]
    want = reference(codes, ids, radius)
    res = find_duplicates(codes, ids, radius, tmp_path / "a.json", chunk=7)
    got = json.loads((tmp_path / "a.json").read_text())
    assert got == want and list(got) == ids
    assert res.n_with_duplicates == sum(1 for v in want.values() if v)
    assert res.n_pairs == sum(len(v) for v in want.values()) // 2
    find_duplicates(codes, ids, radius, tmp_path / "b.json", chunk=4096)
    assert (tmp_path / "b.json").read_text() == (tmp_path / "a.json").read_text()
    grouped = {i for g in res.groups for i in g}
    assert grouped == {i for i, v in enumerate(want.values()) if v}


def test_dedup_cli(syn_run, tmp_path):
    r = runner.invoke(app, ["dedup", str(syn_run), "--radius", "1", "--out", str(tmp_path / "d.json"),
                            "--html", str(tmp_path / "d.html")])
    assert r.exit_code == 0, r.stderr
    got = json.loads((tmp_path / "d.json").read_text())
    from lagnh_pyg.collection import Collection

    codes, ids = Collection(syn_run).live_codes()
    assert got == reference(codes, ids, 1)
    assert "<html>" in (tmp_path / "d.html").read_text()
    bad = runner.invoke(app, ["dedup", str(syn_run), "--radius", "17"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: ") and "0..16" in bad.stderr


def test_add_cli_is_resumable_and_finds_copies(fresh_pic_run, tmp_path):
    from lagnh_pyg.collection import Collection

    coll = Collection(fresh_pic_run)
    n0 = len(coll)
    some = coll.dataset.paths[coll.dataset.split("database")[0]]
    new = tmp_path / "new"
    new.mkdir()
    shutil.copy(some, new / "copy.png")
    shutil.copy(coll.dataset.paths[1], new / "other.png")
    (new / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (tmp_path / "t.csv").write_text("path,tags\ncopy.png,red;circle\nother.png,\nbroken.png,x\n")
    r = runner.invoke(app, ["add", str(fresh_pic_run), str(new), "--tags", str(tmp_path / "t.csv"), "--prefix", "new/"])
    assert r.exit_code == 0, r.stderr
    assert "added 2 picture(s)" in r.stdout and "1 unreadable" in r.stdout
    again = runner.invoke(app, ["add", str(fresh_pic_run), str(new), "--prefix", "new/"])
    assert "added 0 picture(s)" in again.stdout and "2 already in" in again.stdout
    coll = Collection(fresh_pic_run)
    assert len(coll) == n0 + 2 and coll.added["new/copy.png"].tags == ["red", "circle"]
    dups = runner.invoke(app, ["dedup", str(fresh_pic_run), "--radius", "0", "--out", str(tmp_path / "d.json")])
    assert dups.exit_code == 0, dups.stderr
    item = coll.dataset.ids[coll.dataset.split("database")[0]]
    found = json.loads((tmp_path / "d.json").read_text())
    assert "new/copy.png" in found[item] and item in found["new/copy.png"]
    missing = runner.invoke(app, ["add", str(fresh_pic_run), str(tmp_path / "nope")])
    assert missing.exit_code == 2 and missing.stderr.startswith("error: ")


@pytest.mark.parametrize("bits,radius", [(64, 0), (64, 3), (64, 7), (128, 5), (16, 1)])
def test_multi_index_hashing_range_search_is_exact(tmp_path, rng, bits, radius):
    """The pigeonhole index (radius + 1 substring tables) finds exactly the brute-force pairs."""
    base = rng.integers(0, 256, (30, bits // 8), dtype=np.uint8)
    codes = base[rng.integers(0, 30, 240)] ^ np.packbits(rng.random((240, bits)) < 0.04, axis=1)
    ids = [str(i) for i in range(len(codes))]
    find_duplicates(codes, ids, radius, tmp_path / "d.json", chunk=50)
    assert json.loads((tmp_path / "d.json").read_text()) == reference(codes, ids, radius)
