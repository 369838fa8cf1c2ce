"""`lagnh dedup` against brute force, and `lagnh add` (resumable, skips unreadable pictures)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from lagnh_pyg.cli.main import app
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
    r = runner.invoke(app, ["dedup", str(syn_run), "--radius", "1", "--no-verify", "--out", str(tmp_path / "d.json"),
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


# -- confirmation by features, groups that do not chain ----------------------------------------
def ref_confirmed(codes, feats, radius, threshold):
    """{i: [j ...]} of pairs within the radius whose feature cosine reaches the threshold,
    closest first (Hamming), ties by position: loops over the definitions."""
    bits = np.unpackbits(codes, axis=1).astype(int)
    out = {}
    for i in range(len(codes)):
        row = []
        for j in range(len(codes)):
            if j == i:
                continue
            d = int((bits[i] != bits[j]).sum())
            c = float(feats[i] @ feats[j] / (np.linalg.norm(feats[i]) * np.linalg.norm(feats[j])))
            if d <= radius and c >= threshold:
                row.append((d, j))
        out[i] = [j for _, j in sorted(row)]
    return out


def ref_star(n, pairs_of):
    """Star groups by their definition: by decreasing confirmed-duplicate count (ties by
    position), an ungrouped item takes its ungrouped duplicates."""
    degree = {i: len(pairs_of[i]) for i in range(n)}
    taken, groups = set(), []
    for i in sorted(range(n), key=lambda i: (-degree[i], i)):
        if degree[i] == 0 or i in taken:
            continue
        members = [j for j in pairs_of[i] if j not in taken]  # pairs_of: closest first, ties by position
        if members:
            taken.update([i, *members])
            groups.append([i, *members])
    return sorted(groups, key=lambda g: (-len(g), g[0]))


@pytest.mark.parametrize("threshold", [0.5, 0.9])
def test_confirmed_pairs_and_star_groups_match_reference(tmp_path, rng, threshold):
    base = rng.integers(0, 256, (12, 2), dtype=np.uint8)
    codes = base[rng.integers(0, 12, 90)] ^ np.packbits(rng.random((90, 16)) < 0.05, axis=1)
    centres = rng.standard_normal((6, 8))
    feats = centres[rng.integers(0, 6, 90)] + 0.3 * rng.standard_normal((90, 8))
    ids = [f"p{i}" for i in range(90)]
    want = ref_confirmed(codes, feats, 2, threshold)

    def reader(pos):
        return feats[pos], np.ones(len(pos), bool)

    res = find_duplicates(codes, ids, 2, tmp_path / "d.json", features=reader, min_cosine=threshold, chunk=13,
                          max_groups=1000)
    got = json.loads((tmp_path / "d.json").read_text())
    assert got == {ids[i]: [ids[j] for j in v] for i, v in want.items()}
    assert res.n_pairs == sum(len(v) for v in want.values()) // 2 and res.grouping == "star"
    assert res.n_candidates == sum(len(v) for v in reference(codes, ids, 2).values()) // 2 > res.n_pairs
    assert res.groups == ref_star(90, want) and res.n_groups == len(res.groups)
    for g in res.groups:  # no chains: every member is a confirmed duplicate of the representative
        assert all(m in want[g[0]] for m in g[1:])
    grouped = [m for g in res.groups for m in g]
    assert len(grouped) == len(set(grouped))


def test_a_chain_is_not_one_group(tmp_path):
    """A-B, B-C, C-D confirmed, nothing else: components join all four, stars do not."""
    codes = np.array([[0b00000000, 0], [0b00000001, 0], [0b00000011, 0], [0b00000111, 0]], np.uint8)
    ang = np.radians([0, 20, 40, 60])
    feats = np.stack([np.cos(ang), np.sin(ang)], 1)  # neighbours at cosine 0.94, two apart 0.77

    def reader(pos):
        return feats[pos], np.ones(len(pos), bool)

    star = find_duplicates(codes, list("ABCD"), 1, features=reader, min_cosine=0.9)
    comp = find_duplicates(codes, list("ABCD"), 1, features=reader, min_cosine=0.9, grouping="components")
    assert comp.groups == [[0, 1, 2, 3]]
    assert star.groups == [[1, 0, 2]] and star.n_pairs == 3  # B with A and C; D's only duplicate C is taken


def test_unstored_features_do_not_confirm(tmp_path):
    codes = np.zeros((3, 2), np.uint8)
    feats = np.ones((3, 4))

    def reader(pos):
        return feats[pos], np.asarray(pos) != 2  # item 2's features are not stored

    res = find_duplicates(codes, ["a", "b", "c"], 0, tmp_path / "d.json", features=reader)
    assert json.loads((tmp_path / "d.json").read_text()) == {"a": ["b"], "b": ["a"], "c": []}
    assert (res.n_candidates, res.n_pairs, res.n_unverifiable) == (3, 1, 2)


def test_dedup_cli_confirms_prints_groups_and_sorts_the_sheet(fresh_pic_run, tmp_path):
    import re
    import shutil

    from lagnh_pyg.collection import Collection

    coll = Collection(fresh_pic_run)
    db = coll.dataset.split("database")
    new = tmp_path / "new"
    new.mkdir()
    for j in range(3):  # exact copies: same code, same features
        shutil.copy(coll.dataset.paths[db[j]], new / f"copy{j}.png")
    assert runner.invoke(app, ["add", str(fresh_pic_run), str(new), "--prefix", "new/"]).exit_code == 0
    r = runner.invoke(app, ["dedup", str(fresh_pic_run), "--radius", "2"])
    assert r.exit_code == 0, r.stderr
    assert "confirmed by feature cosine >= 0.625" in r.stdout and "candidate pairs from the codes" in r.stdout
    lines = [x for x in r.stdout.splitlines() if " items: " in x]
    assert lines, r.stdout  # the groups themselves, printed with neither --out nor --html
    for j in range(3):
        item = coll.dataset.ids[db[j]]
        assert any(item in x and f"new/copy{j}.png" in x for x in lines), r.stdout
    h = runner.invoke(app, ["dedup", str(fresh_pic_run), "--radius", "6", "--min-cosine", "0.5",
                            "--html", str(tmp_path / "d.html")])
    assert h.exit_code == 0, h.stderr
    page = (tmp_path / "d.html").read_text()
    for sheet in page.split("class=\"grid\"")[1:]:
        dists = [int(x) for x in re.findall(r"d=(\d+)", sheet)]
        assert dists == sorted(dists)
    help_text = runner.invoke(app, ["dedup", "--help"]).stdout
    assert "{id: [ids of its duplicates]}" in " ".join(help_text.replace("│", " ").split())


@pytest.mark.parametrize("args,msg", [
    (["--min-cosine", "1.5"], "--min-cosine must be a number in [-1, 1]"),
    (["--min-cosine", "high"], "--min-cosine must be a number in [-1, 1]"),
    (["--min-cosine", "nan"], "--min-cosine must be a number in [-1, 1]"),
    (["--groups", "0"], "--groups must be a positive integer"),
])
def test_dedup_bad_options(syn_run, args, msg):
    r = runner.invoke(app, ["dedup", str(syn_run), "--radius", "1", *args])
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and msg in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
