"""`lagnh serve`: two-stage ranking through the API (same answers as `lagnh search`), tags,
the featurizing notes, the gallery's pages, and what the header's "added" count counts."""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from serve_fixtures import LOCAL_URL, SHAPES, WRITE_HEADERS  # noqa: E402

from lagnh_pyg.retrieval import codes_dataset, search_run  # noqa: E402
from lagnh_pyg.rundir import Run  # noqa: E402
from lagnh_pyg.serve import ServeSettings, create_app  # noqa: E402


def client(run, **settings) -> TestClient:
    return TestClient(create_app(run, ServeSettings(**settings)), raise_server_exceptions=False, base_url=LOCAL_URL,
                      headers=WRITE_HEADERS)


def triples(results):
    return [(r["id"], r["distance"], None if r["score"] is None else round(r["score"], 6)) for r in results]


def test_search_rerank_matches_lagnh_search(syn_run):
    ds = codes_dataset(Run.open(syn_run))
    c = client(syn_run)
    for item in (ds.ids[ds.split("database")[5]], ds.ids[ds.split("query")[1]]):
        ref = search_run(syn_run, item_id=item, k=15, rerank=60, rerank_score="features:1,aux:0.5")
        body = c.get("/api/search", params={"id": item, "k": 15, "rerank": 60, "score": "features,aux:0.5"}).json()
        assert triples(body["results"]) == [(h.id, h.distance, round(h.score, 6)) for h in ref.hits]
        assert body["rerank"] == {"depth": 60, "score": "features:1,aux:0.5"} and body["notes"] == []
    # the server's default applies when a request does not say; rerank=0 turns it off
    d = client(syn_run, rerank=60, rerank_score="aux")
    assert d.get("/api/info").json()["rerank"] == 60
    item = ds.ids[ds.split("database")[5]]
    ref = search_run(syn_run, item_id=item, k=10, rerank=60, rerank_score="aux")
    assert triples(d.get("/api/search", params={"id": item}).json()["results"]) == \
        [(h.id, h.distance, round(h.score, 6)) for h in ref.hits]
    off = d.get("/api/search", params={"id": item, "rerank": 0}).json()
    assert off["rerank"]["depth"] == 0 and all(r["score"] is None for r in off["results"])


def test_code_query_is_not_reranked_and_says_so(syn_run, rng):
    c = client(syn_run)
    code = rng.integers(0, 256, 2, dtype=np.uint8).tobytes().hex()
    body = c.post("/api/search", json={"code": code, "k": 5, "rerank": 100}).json()
    assert body["rerank"]["depth"] == 0 and "Hamming distance only" in body["notes"][0]
    ref = search_run(syn_run, query_code=np.frombuffer(bytes.fromhex(code), np.uint8), k=5)
    assert [r["id"] for r in body["results"]] == [h.id for h in ref.hits]


@pytest.mark.parametrize("kwargs,status", [
    ({"params": {"id": "5", "rerank": "-1"}}, 422),
    ({"params": {"id": "5", "rerank": "many"}}, 422),
    ({"params": {"id": "5", "rerank": "100001"}}, 422),
    ({"params": {"id": "{item}", "rerank": "10", "score": "colour"}}, 400),
    ({"params": {"id": "{item}", "rerank": "10", "score": "aux:-1"}}, 400),
])
def test_rerank_bad_requests(syn_run, kwargs, status):
    ds = codes_dataset(Run.open(syn_run))
    params = {k: v.format(item=ds.ids[ds.split("database")[0]]) for k, v in kwargs["params"].items()}
    r = client(syn_run).get("/api/search", params=params)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"}


def test_rerank_bad_bodies(syn_run):
    c = client(syn_run)
    assert c.post("/api/search", json={"code": "0000", "rerank": -3}).status_code == 400
    form = c.post("/api/search", data={"code": "0000", "rerank": "x"}, files={"o": ("a", b"")})
    assert form.status_code == 400 and "rerank" in form.json()["error"]


def test_tags_notes_and_pages(fresh_pic_run):
    from PIL import Image

    c = client(fresh_pic_run)
    ds = codes_dataset(Run.open(fresh_pic_run))
    item = ds.ids[ds.split("database")[0]]
    colour = item.split("/")[1].split("_")[0]
    got = c.get(f"/api/items/{item}").json()
    assert sorted(got["tags"]) == sorted([colour, SHAPES[colour]])  # the dataset's tag vocabulary
    res = c.get("/api/search", params={"id": item, "k": 3}).json()
    assert res["query"]["tags"] == got["tags"] and res["results"][0]["tags"] == got["tags"]
    buf = io.BytesIO()
    Image.open(ds.paths[ds.split("database")[0]]).save(buf, format="PNG")
    plain = c.post("/api/search", files={"image": ("p.png", buf.getvalue())}, data={"k": "3"}).json()
    assert any("no --tags given" in n and "aux = zeros" in n for n in plain["notes"])
    odd = c.post("/api/search", files={"image": ("p.png", buf.getvalue())}, data={"k": "3", "tags": "red;bogus"}).json()
    assert any("not in the dataset's vocabulary" in n and "bogus" in n for n in odd["notes"])
    added = c.post("/api/items", files={"images": ("p.png", buf.getvalue())}, data={"tags": "bogus"}).json()
    assert any("bogus" in n for n in added["notes"])
    # the gallery: pages of the live collection, deleted items left out
    n = c.get("/api/info").json()["items"]
    first = c.get("/api/items", params={"offset": 0, "limit": 5}).json()
    assert first["total"] == n and len(first["items"]) == 5 and first["items"][0]["id"] == item
    assert first["items"][0]["thumbnail"] and first["items"][0]["tags"] == got["tags"]
    gone = first["items"][1]["id"]
    assert c.delete(f"/api/items/{gone}").status_code == 200
    again = c.get("/api/items", params={"offset": 0, "limit": 5}).json()
    assert again["total"] == n - 1 and gone not in [x["id"] for x in again["items"]]
    tail = c.get("/api/items", params={"offset": n - 3, "limit": 50}).json()
    assert len(tail["items"]) == 2
    assert c.get("/api/items", params={"limit": 0}).status_code == 422


def test_added_count_leaves_out_held_out_queries(fresh_syn_run):
    from lagnh_pyg.added import AddedItem
    from lagnh_pyg.collection import Collection

    coll = Collection(fresh_syn_run)
    ds = coll.dataset
    q = ds.split("query")[:3]
    codes = coll.run.load_codes("query")
    coll.add([AddedItem(ds.ids[r], codes[j : j + 1], held_out=True) for j, r in enumerate(q)])
    coll.add([AddedItem("mine", codes[5:6])])
    info = client(fresh_syn_run).get("/api/info").json()
    assert (info["added_items"], info["held_out_items"]) == (1, 3)
    assert info["items"] == len(ds.split("database")) + 4
