"""`lagnh serve` against the open internet's habits (issue 22): pictures that explode when
resized, cross-site requests and DNS rebinding, text that is not valid Unicode, writers in
other processes, bugs on a keep-alive connection, deeply nested JSON."""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from lagnh_pyg.serve import ServeSettings, create_app  # noqa: E402

BASE, SAME = "http://127.0.0.1:8000", {"X-Requested-With": "lagnh"}


def client(run, base_url=BASE, headers=None, **settings) -> TestClient:
    return TestClient(create_app(run, ServeSettings(**settings)), raise_server_exceptions=False, base_url=base_url,
                      headers=headers or {})


def pictures(run) -> list:
    from lagnh_pyg.data.store import Dataset

    return [Path(p) for p in Dataset.open(json.loads((run / "run.json").read_text())["data_dir"]).paths]


def error_of(r, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and body["error"] and "Traceback" not in r.text
    return body["error"]


def png(width: int, height: int) -> bytes:
    """A real, fully decodable grey PNG of width x height (a few hundred bytes for a strip)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\0" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


# -- 1. pictures that explode when resized ---------------------------------------------------
@pytest.mark.parametrize("w,h", [(1000, 2), (2, 1000)])
def test_a_long_strip_is_refused_413_before_any_resize(syn_run, pic_run, w, h):
    """A 1000 x 2 strip passes the pixel limit; resizing its short side to 256 would make it
    128000 x 256 (a 100000 x 1 strip: 25.6M x 256, 20 GB). Refused by its aspect ratio, on
    the search and the add endpoints, with one line."""
    for run in (syn_run, pic_run):
        msg = error_of(client(run).post("/api/search", files={"image": ("strip.png", png(w, h))}), 413)
        assert "aspect-ratio limit" in msg and "strip.png" in msg
    c = client(pic_run, headers=SAME)
    assert "aspect-ratio limit" in error_of(c.post("/api/items", files=[("images", ("s.png", png(w, h)))]), 413)
    assert not (pic_run / "added").exists()  # nothing stored


def test_a_100000_pixel_strip_never_reaches_the_resize(pic_run, monkeypatch):
    from lagnh_pyg.extract import backbones

    monkeypatch.setattr(backbones.ImageTransform, "__call__", lambda *a: pytest.fail("the strip was resized"))
    for w, h in ((100_000, 1), (1, 100_000)):
        bomb = png(w, h)
        assert len(bomb) < 1000
        assert "100000" in error_of(client(pic_run).post("/api/search", files={"image": ("b.png", bomb)}), 413)


def test_every_resize_is_bounded_after_it_is_computed(monkeypatch):
    """The transform refuses a resize whose result would pass the limit, before allocating."""
    from PIL import Image

    from lagnh_pyg import limits
    from lagnh_pyg.extract.backbones import ImageTransform

    monkeypatch.setattr(limits, "MAX_RESIZED_PIXELS", 300 * 256)
    t = ImageTransform(256, 224, (0.5,) * 3, (0.5,) * 3)
    assert tuple(t(Image.new("RGB", (280, 256))).shape) == (3, 224, 224)  # 280 x 256: within
    with pytest.raises(limits.PictureTooLarge, match="resizing it to 512 x 256"):
        t(Image.new("RGB", (100, 50)))  # the short side scaled up: 512 x 256 is over 300 x 256


def test_decoding_is_bounded_across_requests():
    """At most DECODE_SLOTS pictures are decoded at once, whatever the number of requests."""
    from lagnh_pyg.serve import uploads

    assert isinstance(uploads.DECODE_SLOTS, threading.BoundedSemaphore) and uploads.DECODE_SLOTS._value <= 2


# -- 2. cross-site requests and DNS rebinding -------------------------------------------------
CROSS = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}


def test_a_cross_site_form_post_cannot_store_an_item(fresh_pic_run):
    """What `fetch('http://127.0.0.1:PORT/api/items', {method: 'POST', mode: 'no-cors', body:
    FormData})` from another site sends: refused, nothing stored, even on loopback without a
    token; the same request from the server's own page goes through."""
    picture = pictures(fresh_pic_run)[0].read_bytes()
    c = client(fresh_pic_run)
    files = [("images", ("x.png", picture))]
    assert "cross-site" in error_of(c.post("/api/items", files=files, headers=CROSS), 403)
    # an old browser that sends neither Origin nor Sec-Fetch-Site: the custom header is missing
    assert "X-Requested-With" in error_of(c.post("/api/items", files=files), 403)
    assert "cross-site" in error_of(c.post("/api/items", files=files, headers={"Origin": "null"}), 403)
    assert "cross-site" in error_of(c.post("/api/items", files=files, headers={"Sec-Fetch-Site": "same-site", **SAME}), 403)
    assert "cross-site" in error_of(c.post("/api/search", files={"image": ("x.png", picture)}, headers=CROSS), 403)
    assert error_of(c.delete("/api/items/x", headers={"Origin": "http://127.0.0.1:9999", **SAME}), 403)
    assert not (fresh_pic_run / "added" / "log.jsonl").exists()
    own = {"Origin": BASE, "Sec-Fetch-Site": "same-origin", **SAME}
    r = c.post("/api/items", files=files, data={"id": "mine"}, headers=own)
    assert r.status_code == 200, r.text
    assert c.delete("/api/items/mine", headers=own).status_code == 200


def test_the_token_replaces_the_header_but_not_the_origin_check(fresh_syn_run):
    c = client(fresh_syn_run, token="t0k")
    body = {"items": [{"id": "a", "code": "abcd"}]}
    auth = {"Authorization": "Bearer t0k"}
    assert c.post("/api/items", json=body, headers=auth).status_code == 200
    assert error_of(c.post("/api/items", json={"items": [{"id": "b", "code": "abcd"}]}, headers={**auth, **CROSS}), 403)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.nip.io:8000", "10.0.0.1"])
def test_only_the_hosts_it_was_started_for_are_answered(syn_run, host):
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 reaches the
    server with `Host: evil.example`; it gets no answer, the page included."""
    c = client(syn_run)
    for path in ("/api/info", "/", "/api/search?id=700&k=2"):
        msg = error_of(c.get(path, headers={"Host": host}), 400)
        assert "does not answer for host" in msg and "--allowed-host" in msg
    for ok in ("127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000"):
        assert c.get("/api/info", headers={"Host": ok}).status_code == 200, ok
    assert client(syn_run, allowed_hosts=("search.example",)).get("/api/info", headers={"Host": "search.example"}).status_code == 200
    assert client(syn_run, allowed_hosts=None).get("/api/info", headers={"Host": host}).status_code == 200


def test_serve_allows_loopback_its_host_and_the_allowed_ones():
    from lagnh_pyg.cli.serve import allowed_hosts

    assert set(allowed_hosts("127.0.0.1", None)) == {"127.0.0.1", "localhost", "::1"}
    assert "search.example" in allowed_hosts("127.0.0.1", ["search.example"])
    assert "10.1.2.3" in allowed_hosts("10.1.2.3", None)
    assert allowed_hosts("127.0.0.1", ["*"]) is None
    wild = allowed_hosts("0.0.0.0", None)
    assert socket.gethostname().lower() in wild and "127.0.0.1" in wild


def test_the_page_sends_the_write_header():
    from lagnh_pyg.serve.app import STATIC

    js = (STATIC / "app.js").read_text()
    assert '"X-Requested-With": "lagnh"' in js


# -- 5. text that is not valid Unicode ---------------------------------------------------------
@pytest.mark.parametrize("field,value", [("tags", ["t\udfff"]), ("tags", ["a\u2028b"]), ("id", "x\x85y"),
                                         ("id", "a\udcffb"), ("id", "a\u2029"), ("tags", ["c1\x9bx"])])
def test_ids_and_tags_must_be_valid_text(fresh_syn_run, field, value):
    c = client(fresh_syn_run, headers=SAME)
    item = {"id": "fine", "code": "abcd", "tags": []}
    item[field] = value
    body = json.dumps({"items": [item]})  # ASCII escapes: a lone surrogate travels as \udfff
    msg = error_of(c.post("/api/items", content=body, headers={"content-type": "application/json"}), 400)
    assert any(w in msg for w in ("control character", "separator", "surrogate", "undecodable", "validation error")), msg
    assert error_of(c.post("/api/items", files=[("images", ("x.png", png(8, 8)))],
                           data={"tags": "ok;t\x85u"}), 400)
    assert c.get("/api/health").json()["items"] == client(fresh_syn_run).get("/api/health").json()["items"]


def test_a_stored_bad_item_never_breaks_a_read(fresh_syn_run):
    """Items written by an older version with a lone surrogate in a tag and a non-UTF-8 byte in
    an id (what `lagnh add` stored for a file named b'bad\\xff.png'): every read still answers,
    with the text escaped; the id is the one this version gives such a file."""
    log = fresh_syn_run / "added" / "log.jsonl"
    client(fresh_syn_run, headers=SAME).post("/api/items", json={"items": [{"id": "ok", "code": "0000"}]})
    with open(log, "a") as f:
        f.write(json.dumps({"op": "add", "items": [{"id": "bad\udcff.png", "code": "0000", "path": None,
                                                    "tags": ["t\udfff", "fine"], "source": None}]}) + "\n")
    c = client(fresh_syn_run)
    r = c.post("/api/search", json={"code": "0000", "k": 5})
    assert r.status_code == 200, r.text
    hit = next(x for x in r.json()["results"] if x["id"].startswith("bad"))
    assert hit["id"] == "bad\\xff.png" and hit["tags"] == ["t\\udfff", "fine"]
    got = c.get("/api/items/bad%5Cxff.png")
    assert got.status_code == 200 and got.json()["tags"] == ["t\\udfff", "fine"]
    assert c.get("/api/search", params={"id": "bad\\xff.png", "k": 3}).status_code == 200
    assert c.get("/").status_code == 200


# -- 4. one writer protocol across processes -----------------------------------------------------
def test_a_second_writer_with_a_taken_id_is_refused(fresh_syn_run):
    """Two collections on one run (a server and `lagnh add`): the one that commits first wins,
    the other is refused, and a restart keeps the first version."""
    from lagnh_pyg.added import AddedItem
    from lagnh_pyg.collection import Collection, ConflictError

    a, b = Collection(fresh_syn_run), Collection(fresh_syn_run)
    code_a, code_b = np.array([[1, 2]], np.uint8), np.array([[3, 4]], np.uint8)
    a.add([AddedItem("x", code_a)])
    with pytest.raises(ConflictError, match="already used"):
        b.add([AddedItem("x", code_b)])
    assert "x" in b  # b learnt a's item while it held the lock
    assert b.add([AddedItem("x", code_b), AddedItem("y", code_b)], skip_taken=True) == ["y"]
    a.delete("y")  # a deletes what b added
    with pytest.raises(ConflictError):
        b.add([AddedItem("y", code_a)])
    again = Collection(fresh_syn_run)
    assert np.array_equal(again.code_of("x"), code_a) and "y" not in again
    records = [json.loads(ln) for ln in (fresh_syn_run / "added" / "log.jsonl").read_text().splitlines()]
    assert [it["id"] for r in records if r["op"] == "add" for it in r["items"]] == ["x", "y"]


def test_an_item_acknowledged_by_the_server_is_never_replaced_by_lagnh_add(fresh_pic_run, tmp_path, monkeypatch):
    """A server and `lagnh add` on one run, both adding `shots/p.png` (other pictures).
    (a) `lagnh add` commits first: the server, started before, refuses its request (409)
    instead of acknowledging an item the log already holds in another version.
    (b) the server acknowledges while `lagnh add` is encoding: `lagnh add` counts it as
    already in. Either way the log holds one record of the id, and a restart keeps the
    version that was acknowledged."""
    from typer.testing import CliRunner

    import lagnh_pyg.ingest as ingest
    from lagnh_pyg.cli.main import app
    from lagnh_pyg.collection import Collection

    photos = pictures(fresh_pic_run)
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "p.png").write_bytes(photos[5].read_bytes())
    cli = ["add", str(fresh_pic_run), str(tmp_path / "new"), "--prefix", "shots/"]

    def records():
        log = (fresh_pic_run / "added" / "log.jsonl").read_text().splitlines()
        return [it for r in map(json.loads, log) if r["op"] == "add" for it in r["items"]]

    # (a) the server is up; `lagnh add` commits first
    server = client(fresh_pic_run, headers=SAME)
    res = CliRunner().invoke(app, cli)
    assert res.exit_code == 0 and "added 1 picture(s)" in res.stdout, res.stdout
    r = server.post("/api/items", files=[("images", ("a.png", photos[0].read_bytes()))], data={"id": "shots/p.png"})
    assert "already used" in error_of(r, 409)
    cli_code = Collection(fresh_pic_run).code_of("shots/p.png").tobytes().hex()
    assert [it["id"] for it in records()] == ["shots/p.png"]

    # (b) `lagnh add` is encoding when the server acknowledges the same id
    (tmp_path / "new" / "q.png").write_bytes(photos[6].read_bytes())
    acked = {}
    real = ingest._encode_readable

    def meanwhile(*a, **k):
        r = server.post("/api/items", files=[("images", ("b.png", photos[1].read_bytes()))], data={"id": "shots/q.png"})
        assert r.status_code == 200, r.text
        acked["code"] = r.json()["added"][0]["code"]
        return real(*a, **k)

    monkeypatch.setattr(ingest, "_encode_readable", meanwhile)
    res = CliRunner().invoke(app, cli)
    assert res.exit_code == 0, res.stderr
    assert "added 0 picture(s)" in res.stdout and "2 already in" in res.stdout, res.stdout
    again = Collection(fresh_pic_run)
    assert again.code_of("shots/q.png").tobytes().hex() == acked["code"]
    assert again.code_of("shots/p.png").tobytes().hex() == cli_code
    assert sorted(it["id"] for it in records()) == ["shots/p.png", "shots/q.png"]


def test_two_lagnh_add_runs_log_each_picture_once(fresh_pic_run, tmp_path):
    """Two `lagnh add` processes on one run and one folder: every picture is committed once."""
    import os
    import subprocess
    import sys

    from serve_fixtures import write_photos

    rels = write_photos(tmp_path / "more", 12, seed=11)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "lagnh_pyg.cli.main", "add", str(fresh_pic_run), str(tmp_path / "more"), "--batch", "3",
           "--prefix", "more/"]
    procs = [subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    added = [int(o.split("added ")[1].split(" ")[0]) for o, _ in outs]
    assert sum(added) == len(rels), outs
    records = [json.loads(ln) for ln in (fresh_pic_run / "added" / "log.jsonl").read_text().splitlines()]
    ids = [it["id"] for r in records if r["op"] == "add" for it in r["items"]]
    assert sorted(ids) == sorted(f"more/{r}" for r in rels)


def test_a_refused_change_leaves_nothing_behind(fresh_syn_run):
    """A delete of an unknown id, an add of a database id: refused, and the run holds no
    side store afterwards (no lock file, no directory)."""
    from lagnh_pyg.data.store import Dataset

    c = client(fresh_syn_run, headers=SAME)
    ds = Dataset.open(json.loads((fresh_syn_run / "run.json").read_text())["data_dir"])
    db_id = ds.ids[int(ds.split("database")[0])]
    assert error_of(c.delete("/api/items/nobody"), 404)
    assert "already used" in error_of(c.post("/api/items", json={"items": [{"id": db_id, "code": "0000"}]}), 409)
    assert not (fresh_syn_run / "added").exists()


def test_a_process_starting_while_another_writes_never_cuts_its_line(fresh_syn_run, monkeypatch):
    """A collection opened (a server starting, `lagnh dedup`) while another process is in the
    middle of writing its line took that line for a crashed writer's and cut it off the log;
    the rest of the line then landed after the cut, and the log could no longer be replayed."""
    import lagnh_pyg.added as added
    from lagnh_pyg.added import AddedItem
    from lagnh_pyg.collection import Collection

    writer = Collection(fresh_syn_run)
    writer.add([AddedItem("first", np.array([[1, 1]], np.uint8))])
    halfway, finish = threading.Event(), threading.Event()
    real_write = os.write

    def slow_write(fd, data):
        if b"second" in bytes(data) and not halfway.is_set():  # the log line: half now, half later
            n = real_write(fd, bytes(data)[: len(data) // 2])
            halfway.set()
            finish.wait(10)
            return n
        return real_write(fd, data)

    monkeypatch.setattr(added.os, "write", slow_write)
    t = threading.Thread(target=writer.add, args=([AddedItem("second", np.array([[2, 2]], np.uint8))],))
    t.start()
    assert halfway.wait(10)
    opened = {}
    reader = threading.Thread(target=lambda: opened.setdefault("c", Collection(fresh_syn_run)))
    reader.start()
    time.sleep(0.5)  # the reader now waits for the writer (or, without the lock, has cut its line)
    finish.set()
    t.join(10)
    reader.join(30)
    monkeypatch.undo()
    final = Collection(fresh_syn_run)
    assert "first" in final and "second" in final
    assert "second" in opened["c"]  # the reader waited and saw the whole line


def test_no_warning_on_start_for_an_old_log_with_a_repeated_id(fresh_syn_run, caplog):
    """A log written by an older version, where two writers raced on one id: the first record
    is kept, and starting says so at most once, not as a warning on every start."""
    from lagnh_pyg.added import ADDED_FORMAT, ADDED_VERSION
    from lagnh_pyg.collection import Collection
    from lagnh_pyg.rundir import Run

    run = Run.open(fresh_syn_run)
    (fresh_syn_run / "added").mkdir(exist_ok=True)
    (fresh_syn_run / "added" / "meta.json").write_text(json.dumps(
        {"format": ADDED_FORMAT, "version": ADDED_VERSION, "bits": run.bits, "model_fingerprint": run.model_fingerprint}))
    rec = [{"op": "add", "items": [{"id": "dup", "code": c, "path": None, "tags": []}]} for c in ("0101", "0202")]
    (fresh_syn_run / "added" / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rec))
    for _ in range(2):
        with caplog.at_level(logging.WARNING):
            coll = Collection(fresh_syn_run)
        assert coll.code_of("dup").tobytes().hex() == "0101"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


# -- 10. bugs on a keep-alive connection, nested JSON ---------------------------------------------
@pytest.fixture
def live(syn_run):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(syn_run)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", access_log=False))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    yield app, port
    server.should_exit = True
    t.join(10)


def _request(sock, path: str) -> tuple[int, bytes]:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return int(head.split(b" ")[1]), body


def test_a_500_keeps_the_connection_usable(live, monkeypatch):
    app, port = live
    monkeypatch.setattr(app.state.collection, "info", lambda: 1 / 0)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        status, body = _request(s, "/api/info")
        assert status == 500 and json.loads(body)["error"].startswith("internal error ZeroDivisionError")
        assert _request(s, "/api/health")[0] == 200  # the same connection answers the next request


@pytest.mark.parametrize("url", ["/api/search", "/api/items"])
def test_deeply_nested_json_is_a_400(syn_run, url):
    deep = b"[" * 100_000 + b"]" * 100_000
    for body in (deep, b'{"items": ' + deep + b"}", b'{"code": ' + deep + b"}"):
        r = client(syn_run, headers=SAME).post(url, content=body, headers={"content-type": "application/json"})
        assert "nested too deeply" in error_of(r, 400)
