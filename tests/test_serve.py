"""`lagnh serve`: the JSON API against `lagnh search`, the side store across restarts, and
the security rules (token, limits, no path traversal, JSON 4xx errors)."""

from __future__ import annotations

import io
import json
import struct
import threading
import zlib

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from lagnh_pyg.cli.main import app as cli_app  # noqa: E402
from lagnh_pyg.data.store import Dataset  # noqa: E402
from lagnh_pyg.retrieval import search_run  # noqa: E402
from lagnh_pyg.serve import ServeSettings, create_app  # noqa: E402

# what every script sends: a Host the server answers for, and the header a write needs on a
# server without a token (tests/test_serve_hostile.py checks the refusals)
BASE_URL, HEADERS = "http://127.0.0.1:8000", {"X-Requested-With": "lagnh"}


def client(run, **settings) -> TestClient:
    return TestClient(create_app(run, ServeSettings(**settings)), raise_server_exceptions=False, base_url=BASE_URL,
                      headers=HEADERS)


def pairs(results) -> list[tuple[str, int]]:
    return [(r["id"], r["distance"]) for r in results]


def dataset_of(run) -> Dataset:
    return Dataset.open(json.loads((run / "run.json").read_text())["data_dir"])


def db_size(run) -> int:
    return len(dataset_of(run).split("database"))


def is_json_4xx(r, status: int | None = None) -> str:
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    if status is not None:
        assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    assert "Traceback" not in r.text
    return body["error"]


def test_search_by_id_ranks_as_lagnh_search(syn_run):
    """Item for item (ids, distances, tie order) the same as `lagnh search --id`, for database
    items and for a query item (not in the index: its stored code)."""
    c = client(syn_run)
    ds = dataset_of(syn_run)
    ids = [ds.ids[i] for i in ds.split("database")[[0, 7, 300]]] + [ds.ids[ds.split("query")[2]]]
    for item in ids:
        r = c.get("/api/search", params={"id": item, "k": 40})
        assert r.status_code == 200, r.text
        body = r.json()
        ref = search_run(syn_run, item_id=item, k=40)
        assert pairs(body["results"]) == [(h.id, h.distance) for h in ref.hits]
        assert [x["rank"] for x in body["results"]] == list(range(1, 41))
        assert body["results"][0]["labels"] == ref.hits[0].labels
        assert body["query"]["labels"] == ref.query_labels
    # the CLI's JSON agrees too
    cli = CliRunner().invoke(cli_app, ["search", str(syn_run), "--id", ids[1], "-k", "15", "--json"])
    assert cli.exit_code == 0, cli.stderr
    api = c.get("/api/search", params={"id": ids[1], "k": 15}).json()
    assert pairs(api["results"]) == [(h["id"], h["distance"]) for h in json.loads(cli.stdout)["results"]]


def test_search_by_code_json_and_form(syn_run, rng):
    c = client(syn_run)
    code = rng.integers(0, 256, (1, 2), dtype=np.uint8)
    ref = [(h.id, h.distance) for h in search_run(syn_run, query_code=code, k=12).hits]
    r1 = c.post("/api/search", json={"code": code.tobytes().hex(), "k": 12})
    r2 = c.post("/api/search", data={"code": code.tobytes().hex().upper(), "k": "12"}, files={"x": ("x", b"")})
    assert pairs(r1.json()["results"]) == ref == pairs(r2.json()["results"])
    assert r1.json()["query"]["kind"] == "code"


def test_health_info_and_page(syn_run):
    c = client(syn_run, token="s3cret")
    n = db_size(syn_run)
    assert c.get("/api/health").json() == {"status": "ok", "items": n}
    info = c.get("/api/info").json()
    assert (info["method"], info["bits"], info["items"], info["index_kind"]) == ("itq", 16, n, "flat")
    assert info["writes_need_token"] is True and info["upload_search"] is False
    page = c.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "/static/app.js" in page.text
    assert c.get("/static/app.js").status_code == 200


@pytest.mark.parametrize("method,url,kwargs,status", [
    ("get", "/api/search", {"params": {"id": "no-such-item"}}, 404),
    ("get", "/api/search", {}, 422),
    ("get", "/api/search", {"params": {"id": "5", "k": "0"}}, 422),
    ("get", "/api/search", {"params": {"id": "5", "k": "many"}}, 422),
    ("get", "/api/search", {"params": {"id": "5", "k": "100000"}}, 422),
    ("post", "/api/search", {"json": {"code": "zz11"}}, 400),
    ("post", "/api/search", {"json": {"code": "00"}}, 400),
    ("post", "/api/search", {"json": {"k": 3}}, 400),
    ("post", "/api/search", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400),
    ("post", "/api/search", {"content": b"abc", "headers": {"content-type": "text/plain"}}, 400),
    ("post", "/api/search", {"data": {"k": "3"}, "files": {"other": ("a.txt", b"x")}}, 400),
    ("post", "/api/search", {"data": {"k": "-1", "code": "0000"}, "files": {"o": ("a", b"")}}, 400),
    ("post", "/api/search", {"files": {"image": ("a.png", b"not a picture")}}, 400),
    ("post", "/api/search", {"files": {"image": ("a.png", b"")}}, 400),
    ("get", "/api/nothing", {}, 404),
    ("put", "/api/search", {}, 405),
    ("get", "/api/items/no-such-item", {}, 404),
    ("delete", "/api/items/no-such-item", {}, 404),
    ("post", "/api/items", {"json": {"items": []}}, 400),
    ("post", "/api/items", {"json": {"items": [{"id": "a", "code": "123"}]}}, 400),
    ("post", "/api/items", {"json": {"items": [{"id": "a\nb", "code": "1234"}]}}, 400),
    ("post", "/api/items", {"data": {"tags": "x"}, "files": {"other": ("a", b"x")}}, 400),
])
def test_every_error_is_json_4xx(syn_run, method, url, kwargs, status):
    r = getattr(client(syn_run), method)(url, **kwargs) if method != "delete" else client(syn_run).delete(url)
    is_json_4xx(r, status)


def test_upload_search_without_a_recipe_is_a_clear_400(syn_run):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (20, 20), (1, 2, 3)).save(buf, format="PNG")
    msg = is_json_4xx(client(syn_run).post("/api/search", files={"image": ("q.png", buf.getvalue())}), 400)
    assert "lagnh extract features" in msg


def test_added_items_survive_a_restart_and_deleted_ones_stay_deleted(fresh_syn_run, rng):
    run = fresh_syn_run
    n = db_size(run)
    c = client(run)
    codes = rng.integers(0, 256, (40, 2), dtype=np.uint8)
    acked = []

    def adder(part):
        for j in part:
            r = c.post("/api/items", json={"items": [{"id": f"new/{j}", "code": codes[j].tobytes().hex(), "tags": ["t;u"]}]})
            assert r.status_code == 200, r.text
            acked.append(f"new/{j}")

    def searcher():
        for _ in range(30):
            assert c.get("/api/search", params={"id": "700", "k": 5}).status_code in (200, 404)

    threads = [threading.Thread(target=adder, args=(range(i, 40, 4),)) for i in range(4)]
    threads += [threading.Thread(target=searcher) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(acked) == 40 and c.get("/api/health").json()["items"] == n + 40
    r = c.post("/api/items", json={"items": [{"id": "new/0", "code": "0000"}]})
    assert "already used" in is_json_4xx(r, 409)
    hit = c.post("/api/search", json={"code": codes[5].tobytes().hex(), "k": 1}).json()["results"][0]
    assert hit["distance"] == 0 and hit["tags"] in (["t", "u"], None)
    near = c.get("/api/search", params={"id": "new/5", "k": 50}).json()["results"]
    db_item = next(r["id"] for r in near if not r["id"].startswith("new/"))
    assert c.delete("/api/items/new/7").json() == {"deleted": "new/7", "items": n + 39}
    assert c.delete(f"/api/items/{db_item}").status_code == 200

    c2 = client(run)  # a restart: everything acknowledged is back, in the same order
    info = c2.get("/api/info").json()
    assert (info["items"], info["added_items"], info["deleted_items"]) == (n + 38, 39, 1)
    for j in (0, 5, 39):
        res = c2.post("/api/search", json={"code": codes[j].tobytes().hex(), "k": 50}).json()["results"]
        assert f"new/{j}" in [x["id"] for x in res if x["distance"] == 0]
    got = c2.post("/api/search", json={"code": codes[7].tobytes().hex(), "k": 1000}).json()["results"]
    ids = [x["id"] for x in got]
    assert "new/7" not in ids and db_item not in ids and len(ids) == len(set(ids)) == n + 38
    assert is_json_4xx(c2.post("/api/items", json={"items": [{"id": "new/7", "code": "0000"}]}), 409)
    same = c.post("/api/search", json={"code": codes[3].tobytes().hex(), "k": 30}).json()["results"]
    assert pairs(same) == pairs(c2.post("/api/search", json={"code": codes[3].tobytes().hex(), "k": 30}).json()["results"])


def test_a_torn_last_line_loses_only_that_request(fresh_syn_run):
    from lagnh_pyg.collection import Collection

    c = client(fresh_syn_run)
    assert c.post("/api/items", json={"items": [{"id": "ok1", "code": "0101"}, {"id": "ok2", "code": "0202"}]}).status_code == 200
    log = fresh_syn_run / "added" / "log.jsonl"
    with open(log, "ab") as f:  # a crash in the middle of writing the next request
        f.write(b'{"op":"add","items":[{"id":"torn","code":"03')
    coll = Collection(fresh_syn_run)
    assert "ok1" in coll and "ok2" in coll and "torn" not in coll and len(coll) == db_size(fresh_syn_run) + 2
    assert log.read_bytes().endswith(b"\n")  # cut off, so the next request starts on a clean line
    c2 = TestClient(create_app(fresh_syn_run, collection=coll), base_url=BASE_URL, headers=HEADERS)
    assert c2.post("/api/items", json={"items": [{"id": "ok3", "code": "0303"}]}).status_code == 200
    assert "ok3" in Collection(fresh_syn_run)


def test_writes_need_the_token_when_one_is_set(fresh_syn_run):
    c = client(fresh_syn_run, token="s3cret")
    body = {"items": [{"id": "x", "code": "abcd"}]}
    assert "token" in is_json_4xx(c.post("/api/items", json=body), 401)
    is_json_4xx(c.post("/api/items", json=body, headers={"Authorization": "Bearer wrong"}), 401)
    is_json_4xx(c.post("/api/items", json=body, headers={"Authorization": "Basic s3cret"}), 401)
    is_json_4xx(c.delete("/api/items/5", headers={"Authorization": "Bearer nope"}), 401)
    assert c.get("/api/search", params={"id": "700", "k": 2}).status_code == 200  # reads stay open
    ok = c.post("/api/items", json=body, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.json()["items"] == db_size(fresh_syn_run) + 1
    assert c.delete("/api/items/x", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_upload_size_limit(syn_run):
    c = client(syn_run, max_upload_bytes=4096)
    msg = is_json_4xx(c.post("/api/search", files={"image": ("big.png", b"\0" * 10_000)}), 413)
    assert "4096-byte limit" in msg
    chunked = c.post("/api/search", content=iter([b"x" * 3000, b"y" * 3000]),
                     headers={"content-type": "multipart/form-data; boundary=abc"})
    is_json_4xx(chunked, 413)


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that claims to be width x height (a decompression bomb's header)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_decompression_bomb_is_refused_before_decoding(syn_run, pic_run):
    for side in (7_000, 50_000):  # over our 40 MP limit; over PIL's own guard too
        bomb = _png_header_only(side, side)
        assert len(bomb) < 200
        for run in (syn_run, pic_run):
            msg = is_json_4xx(client(run).post("/api/search", files={"image": ("bomb.png", bomb)}), 413)
            assert "pixel" in msg
    msg = is_json_4xx(client(pic_run, max_pixels=1000).post("/api/search", files={"image": ("b.png", _png_header_only(40, 40))}), 413)
    assert "40 x 40 pixels is over the 1000-pixel limit" in msg


@pytest.mark.parametrize("item", ["../../../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "/etc/passwd",
                                  "%2e%2e/%2e%2e/run.json", "a/../../run.json", "..", "C:\\windows\\win.ini"])
def test_no_path_traversal_through_thumbnails(pic_run, item):
    c = client(pic_run)
    r = c.get(f"/api/items/{item}/thumbnail")
    assert r.status_code in (404, 405), r.text
    if r.status_code == 404:
        assert "Traceback" not in r.text and "root:" not in r.text and r.json()["error"]


def test_thumbnails_and_upload_search_and_add(fresh_pic_run):
    from PIL import Image

    c = client(fresh_pic_run)
    ds = dataset_of(fresh_pic_run)
    row = int(ds.split("database")[4])
    item = ds.ids[row]
    th = c.get(f"/api/items/{item}/thumbnail")
    assert th.status_code == 200 and th.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(th.content)).size == (48, 48)
    data = open(ds.paths[row], "rb").read()
    res = c.post("/api/search", files={"image": ("mine.png", data)}, data={"k": "5"}).json()
    assert res["query"]["kind"] == "image" and res["results"][0]["distance"] == 0
    assert item in [r["id"] for r in res["results"] if r["distance"] == 0]
    assert res["results"][0]["thumbnail"].endswith("/thumbnail")
    # adding the picture under a new id: it is found at distance 0 and has its thumbnail
    add = c.post("/api/items", files=[("images", ("again.png", data))], data={"id": "mine/again.png", "tags": "red;circle"})
    assert add.status_code == 200, add.text
    assert add.json()["added"][0]["code"] == res["query"]["code"]
    again = c.get("/api/search", params={"id": "mine/again.png", "k": 3}).json()
    assert again["query"]["tags"] == ["red", "circle"] and again["results"][0]["distance"] == 0
    assert c.get("/api/items/mine%2Fagain.png/thumbnail").status_code == 200
    # two pictures in one request, default ids; the same picture again is refused
    two = c.post("/api/items", files=[("images", ("x.png", data)), ("images", ("y y.png", open(ds.paths[0], "rb").read()))])
    assert two.status_code == 200, two.text
    ids = [a["id"] for a in two.json()["added"]]
    assert ids[0].startswith("added/") and ids[0].endswith("-x.png") and ids[1].endswith("-y_y.png")
    is_json_4xx(c.post("/api/items", files=[("images", ("x.png", data))]), 409)
    is_json_4xx(c.post("/api/items", files=[("images", ("x.png", data)), ("images", ("z.png", data))],
                       data={"id": "one"}), 400)
    stored = list((fresh_pic_run / "added" / "images").iterdir())
    assert len(stored) == 2 and all(len(p.stem) == 64 for p in stored)  # named by content hash only


def test_serve_refuses_a_public_bind_without_token(syn_run):
    from lagnh_pyg.cli.serve import is_loopback

    r = CliRunner().invoke(cli_app, ["serve", str(syn_run), "--host", "0.0.0.0"])
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--token" in lines[0]
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    r = CliRunner().invoke(cli_app, ["serve", str(syn_run), "--port", "0"])
    assert r.exit_code == 2 and "--port" in r.stderr


def test_serve_binds_loopback_by_default():
    import inspect

    from lagnh_pyg.cli.serve import serve

    assert inspect.signature(serve.__wrapped__).parameters["host"].default == "127.0.0.1"


def test_search_answers_follow_the_documented_schema(syn_run):
    """The search routes build their JSON by hand (speed): check it against the models."""
    from lagnh_pyg.serve.models import SearchResponse

    c = client(syn_run)
    for r in (c.get("/api/search", params={"id": dataset_of(syn_run).ids[0], "k": 7}),
              c.post("/api/search", json={"code": "abcd", "k": 3})):
        body = r.json()
        assert SearchResponse.model_validate(body).model_dump() == body
