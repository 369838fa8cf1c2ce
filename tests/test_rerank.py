"""Two-stage ranking: the score against cosines written out here, run-level evaluation and
search against a brute-force re-ranking, the experiment's numbers against `lagnh evaluate`,
and the CLI's bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from lagnh_pyg.cli.main import app
from lagnh_pyg.errors import InputError
from lagnh_pyg.rerank import (
    DEFAULT_SCORE,
    RerankScore,
    Vectors,
    check_depth,
    encode_with_output,
    own_item_first,
    real_output,
    score_candidates,
)

runner = CliRunner()


def cos(a, b):
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
    return sum(x * y for x, y in zip(a, b)) / (na * nb) if na and nb else 0.0


def ref_score(weights, qz, qf, qa, code_bits, cf, ca):
    """The score of one candidate, from the definitions: cosines of plain lists."""
    s = 0.0
    for name, w in weights.items():
        if name == "asym":
            s += w * cos(qz, [2 * b - 1 for b in code_bits])
        elif name == "features":
            s += w * cos(qf, cf)
        else:
            s += w * cos(qa, ca)
    return s


def test_score_parse_and_bad_input():
    assert str(RerankScore.parse("features+aux")) == "features:1,aux:1"
    assert str(RerankScore.parse("aux:0.5, asym=2")) == "asym:2,aux:0.5"  # canonical component order
    assert str(RerankScore.parse("features:1,aux:0")) == "features:1"
    assert str(RerankScore.parse(DEFAULT_SCORE)) == DEFAULT_SCORE
    for bad, msg in [("", "empty"), ("colour", "unknown re-rank score component"), ("aux:x", "not a number"),
                     ("aux:-1", ">= 0"), ("aux:nan", ">= 0"), ("aux,aux:2", "twice"), ("aux:0", "every weight")]:
        with pytest.raises(InputError, match=msg):
            RerankScore.parse(bad)
    assert check_depth("25") == 25 and check_depth(0) == 0
    for bad in (-1, "x", 2.5, True, "-3"):
        with pytest.raises(InputError, match="non-negative integer"):
            check_depth(bad)


@pytest.mark.parametrize("spec", ["asym", "features", "aux", "asym:0.3,features:1,aux:2"])
def test_score_candidates_matches_the_definition(rng, spec):
    score = RerankScore.parse(spec)
    weights = dict(score.weights)
    c, R, bits, d, a = 3, 5, 16, 6, 4
    q = Vectors(rng.normal(size=(c, bits)), rng.normal(size=(c, d)), rng.random((c, a)))
    q.aux[1] = 0  # a query without aux: cosine 0
    codes = rng.integers(0, 256, (c, R, bits // 8), dtype=np.uint8)
    cand = Vectors(None, rng.normal(size=(c, R, d)), rng.random((c, R, a)))
    cand.aux[2, 1] = 0  # a candidate without aux: cosine 0
    got = score_candidates(score, q, codes, cand)
    for i in range(c):
        for j in range(R):
            bits_ij = np.unpackbits(codes[i, j]).tolist()
            want = ref_score(weights, q.z[i].tolist(), q.features[i].tolist(), q.aux[i].tolist(), bits_ij,
                             cand.features[i, j].tolist(), cand.aux[i, j].tolist())
            assert got[i, j] == pytest.approx(want, abs=1e-5)
    # candidates without stored vectors get the mean of the query's other candidates
    present = np.ones((c, R), bool)
    present[0, 2] = False
    if score.needs("features"):
        part = score_candidates(RerankScore.parse("features"), q, codes, cand, present)
        full = score_candidates(RerankScore.parse("features"), q, codes, cand)
        assert part[0, 2] == pytest.approx(full[0, [0, 1, 3, 4]].mean())
        assert np.allclose(part[1:], full[1:])


def test_real_output_and_codes_of_a_baseline(small_synthetic):
    from lagnh_pyg.baselines import make_baseline
    from lagnh_pyg.codes import pack_codes
    from lagnh_pyg.data.store import Dataset

    ds = Dataset.open(small_synthetic)
    X, A = ds.feature_rows(ds.split("train")), ds.aux_rows(ds.split("train"))
    model = make_baseline("itq", 16, 0).fit(X)
    z = real_output(model, X[:20], A[:20])
    assert np.allclose(z, model.project(X[:20]))
    codes, z2 = encode_with_output(model, X[:20], A[:20])
    assert np.array_equal(codes, pack_codes(model.encode(X[:20]))) and np.allclose(z2, z)


def test_own_item_first():
    ids, d, s = own_item_first(["a", "b", "c"], np.array([0, 0, 1]), np.array([.5, .9, .1]), "b")
    assert ids == ["b", "a", "c"] and d.tolist() == [0, 0, 1] and s.tolist() == [.9, .5, .1]
    ids, d, s = own_item_first(["a", "b"], np.array([0, 0]), np.array([1.0, 2.0]), "z")
    assert ids == ["z", "a", "b"] and d.tolist() == [0, 0, 0] and np.isnan(s[0])
    assert own_item_first(["a"], np.array([3]), np.array([1.0]), None)[0] == ["a"]


@pytest.mark.parametrize("seed", range(30))
def test_first_k_keeps_what_own_item_first_keeps_of_the_whole_list(seed):
    """The service cuts the R re-ranked positions to the first k before putting the query's own
    item first: the same k hits as on the whole list, wherever the own item lies (or not)."""
    from lagnh_pyg.collection import _first_k

    r = np.random.default_rng(seed)
    n, k = int(r.integers(1, 30)), int(r.integers(1, 12))
    pos = r.permutation(40)[:n]
    dist, scores = r.integers(0, 3, n), r.random(n)
    own = [None, int(r.integers(0, 40)), int(pos[r.integers(0, n)])][seed % 3]
    full = own_item_first(pos.tolist(), dist, scores, own)
    cut = own_item_first(*[a.tolist() if i == 0 else a for i, a in enumerate(_first_k(pos, dist, scores, k, own))],
                         own)
    assert full[0][:k] == cut[0][:k]
    assert np.array_equal(full[1][:k], cut[1][:k]) and np.array_equal(full[2][:k], cut[2][:k], equal_nan=True)


def brute_rerank(qcode, dcodes, qf, qa, df, da, R, weights):
    """Database indices in two-stage order, by definition (lists and loops)."""
    qb, db = np.unpackbits(qcode).tolist(), [np.unpackbits(c).tolist() for c in dcodes]
    dist = [sum(x != y for x, y in zip(qb, b)) for b in db]
    hamming = sorted(range(len(db)), key=lambda j: (dist[j], j))
    cand = hamming[:R]
    sc = {j: ref_score(weights, None, qf, qa, None, df[j], da[j]) for j in cand}
    return sorted(cand, key=lambda j: (-sc[j], hamming.index(j))) + hamming[R:], dist


def test_evaluate_run_rerank_matches_brute_force(syn_run, tmp_path):
    from lagnh_pyg.retrieval import codes_dataset, evaluate_run
    from lagnh_pyg.rundir import Run

    run = Run.open(syn_run)
    ds = codes_dataset(run)
    qidx, didx = ds.split("query"), ds.split("database")
    qc, dc = run.load_codes("query"), run.load_codes("database")
    F, A, L = ds.feature_rows(slice(None)), ds.aux_rows(slice(None)), ds.label_rows(slice(None))
    R, K = 40, 25
    weights = {"features": 1.0, "aux": 0.5}
    aps = []
    for i in range(len(qidx)):
        order, _ = brute_rerank(qc[i], dc, F[qidx[i]].tolist(), A[qidx[i]].tolist(), F[didx].tolist(),
                                A[didx].tolist(), R, weights)
        rel = [bool((L[qidx[i]] & L[didx[j]]).any()) for j in order[:K]]
        hits = np.cumsum(rel)
        aps.append(sum(h / (r + 1) for r, (h, x) in enumerate(zip(hits, rel)) if x) / hits[-1] if hits[-1] else 0.0)
    counted = [(L[qidx[i]] & L[didx]).any() for i in range(len(qidx))]
    want = np.mean([a for a, c in zip(aps, counted) if c])
    ev = evaluate_run(syn_run, K, "lagnh", out_dir=tmp_path, plots=False, rerank=R, rerank_score="features,aux:0.5")
    assert ev.result.map == pytest.approx(want, abs=1e-9)
    assert ev.summary["rerank"] == R and ev.summary["rerank_score"] == "features:1,aux:0.5"
    assert ev.files["json"].name == "lagnh-top25-rerank40-features1-aux0.5.json"
    plain = evaluate_run(syn_run, K, "lagnh", out_dir=tmp_path, plots=False)
    assert plain.result.map != ev.result.map and plain.summary["rerank"] == 0


def test_query_maps_agree_with_evaluate(syn_run, tmp_path):
    from lagnh_pyg.experiments.rerank import query_maps, weight_grid
    from lagnh_pyg.retrieval import evaluate_run
    from lagnh_pyg.rundir import Run

    scores = [RerankScore.parse(s) for s in ("asym", "features:1,aux:1", "asym:0.5,aux:1")]
    got = query_maps(Run.open(syn_run), scores, 30, 20)
    for s in scores:
        for p in ("lagnh", "ties"):
            ev = evaluate_run(syn_run, 20, p, out_dir=tmp_path, plots=False, rerank=30, rerank_score=s)
            assert got["scores"][str(s)][p] == pytest.approx(ev.result.map, abs=1e-12)
    assert got["plain"]["lagnh"] == pytest.approx(evaluate_run(syn_run, 20, out_dir=tmp_path, plots=False).result.map)
    grid = weight_grid((0.0, 0.5, 1.0))
    assert len({str(s) for s in grid}) == len(grid) == 19  # 26 non-zero triples, 7 repeat a ratio


def test_search_run_rerank_matches_brute_force(syn_run):
    from lagnh_pyg.retrieval import codes_dataset, search_run
    from lagnh_pyg.rundir import Run

    run = Run.open(syn_run)
    ds = codes_dataset(run)
    didx = ds.split("database")
    dc = run.load_codes("database")
    F, A = ds.feature_rows(slice(None)), ds.aux_rows(slice(None))
    row = int(didx[11])
    order, dist = brute_rerank(dc[11], dc, F[row].tolist(), A[row].tolist(), F[didx].tolist(), A[didx].tolist(),
                               60, {"features": 1.0})
    res = search_run(run, item_id=ds.ids[row], k=20, rerank=60, rerank_score="features")
    want = [ds.ids[didx[j]] for j in order]
    assert want[0] == ds.ids[row]  # its own features: cosine 1
    assert [h.id for h in res.hits] == want[:20]
    assert [h.distance for h in res.hits] == [dist[j] for j in order[:20]]
    assert all(a.score >= b.score for a, b in zip(res.hits, res.hits[1:]))
    assert res.rerank == 60 and res.rerank_score == "features:1"


def test_search_puts_the_query_item_first_among_ties(syn_run):
    """Every database item that shares its code with earlier items: plain ranking (ties by
    database order) would put those first; the query's own item leads instead."""
    from lagnh_pyg.retrieval import codes_dataset, search_run
    from lagnh_pyg.rundir import Run

    run = Run.open(syn_run)
    ds = codes_dataset(run)
    dc = run.load_codes("database")
    _, first = np.unique(dc, axis=0, return_index=True)
    later = sorted(set(range(len(dc))) - set(first.tolist()))[:5]
    assert later, "the fixture has codes shared by several items"
    for j in later:
        item = ds.ids[ds.split("database")[j]]
        res = search_run(run, item_id=item, k=3)
        assert res.hits[0].id == item and res.hits[0].distance == 0


def test_cli_evaluate_and_search_with_rerank(syn_run, tmp_path):
    r = runner.invoke(app, ["evaluate", str(syn_run), "--rerank", "50", "--protocol", "ties", "--topk", "30",
                            "--no-plots", "--json", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.stderr
    assert f"protocol ties; Hamming top 50 re-ranked by {DEFAULT_SCORE}" in r.stdout
    summary = json.loads((tmp_path / "e.json").read_text())
    assert summary["rerank"] == 50 and summary["protocol"] == "ties" and "expected value" in summary["tie_rule"]
    from lagnh_pyg.retrieval import codes_dataset
    from lagnh_pyg.rundir import Run

    ds = codes_dataset(Run.open(syn_run))
    item = ds.ids[ds.split("query")[0]]
    s = runner.invoke(app, ["search", str(syn_run), "--id", item, "-k", "5", "--rerank", "100", "--json"])
    assert s.exit_code == 0, s.stderr
    body = json.loads(s.stdout)
    assert body["rerank"] == 100 and len(body["results"]) == 5 and body["results"][0]["score"] is not None


@pytest.mark.parametrize("args,msg", [
    (["evaluate", "{run}", "--rerank", "-1"], "--rerank must be a non-negative integer"),
    (["evaluate", "{run}", "--rerank", "ten"], "--rerank must be a non-negative integer"),
    (["evaluate", "{run}", "--rerank", "10", "--rerank-score", "colour"], "unknown re-rank score component"),
    (["evaluate", "{run}", "--protocol", "tie"], "unknown protocol 'tie'"),
    (["evaluate", "{run}", "--rerank-score", "aux:-2"], ">= 0"),
    (["search", "{run}", "--id", "x", "--rerank", "1.5"], "--rerank must be a non-negative integer"),
    (["serve", "{run}", "--rerank", "x"], "--rerank must be a non-negative integer"),
    (["serve", "{run}", "--rerank-score", "features:oops"], "not a number"),
    (["experiment", "rerank", "{run}", "--out", "{tmp}/r", "--rerank", "0"], "must be positive"),
])
def test_rerank_bad_input(syn_run, tmp_path, args, msg):
    r = runner.invoke(app, [a.format(run=syn_run, tmp=tmp_path) for a in args])
    assert r.exit_code == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], r.stderr


def test_rerank_study_saves_each_runs_choice(fresh_syn_run, tmp_path):
    """`experiment rerank --save`: the report, the run's rerank.json, and its use as the run's
    default by evaluate, search and serve."""
    from lagnh_pyg.rerank import run_score
    from lagnh_pyg.retrieval import codes_dataset, evaluate_run
    from lagnh_pyg.rundir import Run

    run = Run.open(fresh_syn_run)
    assert run_score(run) == (RerankScore.parse(DEFAULT_SCORE), "the default")
    r = runner.invoke(app, ["experiment", "rerank", str(fresh_syn_run), "--out", str(tmp_path / "rep"), "--rerank", "30",
                            "--topk", "20", "--save"])
    assert r.exit_code == 0, r.stderr
    report = json.loads((tmp_path / "rep" / "rerank.json").read_text())
    chosen = report["chosen_per_dataset"][str(run.root)]
    val = report["validation"][str(run.root)]
    assert val["scores"][chosen]["lagnh"] == max(v["lagnh"] for v in val["scores"].values())  # the best on validation
    n_db = len(codes_dataset(run).split("database"))
    assert (val["validation_items"], val["fit_items"]) == (80, 320)
    assert val["rerank"] == round(30 * 320 / n_db) and val["topk"] == round(20 * 320 / n_db)  # the same share
    saved = json.loads(run.rerank_path.read_text())
    assert saved["score"] == chosen and saved["model_fingerprint"] == run.model_fingerprint
    assert run_score(run)[0] == RerankScore.parse(chosen)
    ev = evaluate_run(fresh_syn_run, 20, out_dir=tmp_path / "m", plots=False, rerank=30)
    assert ev.summary["rerank_score"] == chosen
    assert ev.result.map == pytest.approx(report["queries"][str(run.root)]["scores"][chosen]["lagnh"], abs=1e-12)
    from fastapi.testclient import TestClient

    from lagnh_pyg.serve import create_app

    assert TestClient(create_app(fresh_syn_run), base_url="http://127.0.0.1").get("/api/info").json()["rerank_score"] == chosen
    assert "Chosen per dataset" in (tmp_path / "rep" / "rerank.md").read_text()
