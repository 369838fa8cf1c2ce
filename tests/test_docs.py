"""The documentation is tested like code: its Python examples run, its links resolve, the CLI
reference is the command line's own --help, and the documented curl form sends what it says.
(`make docs` builds the site with --strict, which fails on a broken link between its pages.)"""

import importlib.util
import re
import shutil
import subprocess
import threading
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
EXAMPLE_PAGES = PAGES
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(page: Path) -> list[str]:
    return FENCE.findall(page.read_text())


def test_the_pages_have_examples_to_run():
    assert len(python_blocks(ROOT / "docs" / "python.md")) >= 5 and python_blocks(ROOT / "README.md")


@pytest.mark.parametrize("page", [p for p in EXAMPLE_PAGES if python_blocks(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_the_python_examples_run(page, tmp_path, monkeypatch):
    """Each page's ```python blocks run in order, in one namespace, in an empty directory."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for i, block in enumerate(python_blocks(page)):
        try:
            exec(compile(block, f"{page.name}[block {i + 1}]", "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"{page.relative_to(ROOT)}, python block {i + 1} fails: {e!r}") from e


def _links(page: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)  # not in code
    return [m for m in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", m)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    missing = [link for link in _links(page) if link.split("#")[0]
               and not (page.parent / link.split("#")[0]).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


def test_the_readme_is_short_and_links_the_site():
    """What it is, the two commands, a photo folder to a served page, ten lines of Python and
    links: everything else is on the site."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 100
    for command in ("make demo", "make test", "make install", "lagnh index-folder", "lagnh serve", "lagnh add",
                    "lagnh dedup"):
        assert command in text, command
    assert len(python_blocks(ROOT / "README.md")[0].strip().splitlines()) <= 10
    links = _links(ROOT / "README.md")
    assert all(link.startswith("docs/") for link in links), links
    site = {str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md")} - {"docs/index.md"}
    linked = {link.split("#")[0] for link in links}
    assert {"docs/python.md", "docs/cli.md", "docs/method.md", "docs/results/index.md"} <= linked
    assert linked <= site | {"docs/index.md"}


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cli_reference_is_the_help_of_every_command():
    from typer.testing import CliRunner

    from lagnh_pyg.cli.main import app

    hooks = _hooks()
    pages = dict((" ".join(path), text) for path, text in hooks.help_pages())
    for path in ("", "train", "data", "data import", "data import coco", "experiment accuracy", "index-folder",
                 "serve", "add", "dedup"):
        assert path in pages, path
    res = CliRunner().invoke(app, ["train", "--help"], prog_name="lagnh", env={"COLUMNS": hooks.WIDTH})
    assert pages["train"] == res.output.rstrip() and "--config" in pages["train"]
    markdown = (ROOT / "docs" / "cli.md").read_text()
    assert hooks.MARKER in markdown
    page = type("Page", (), {"file": type("File", (), {"src_uri": "cli.md"})()})()
    rendered = hooks.on_page_markdown(markdown, page)
    assert "## `lagnh train`" in rendered and res.output.rstrip() in rendered


def test_no_help_text_in_square_brackets_is_swallowed_as_markup():
    """Rich reads ``[word ...]`` as a style tag and drops it from ``--help``: each bracketed
    span of a command's description must reach its help page (escaped as ``\\[``)."""
    import re

    from typer.main import get_command

    from lagnh_pyg.cli.main import app

    pages = {" ".join(path): " ".join(text.split()) for path, text in _hooks().help_pages()}
    checked = 0

    def walk(cmd, path):
        nonlocal checked
        for span in re.findall(r"\\?\[[^\]\n]*\]", cmd.help or ""):
            assert " ".join(span.lstrip("\\").split()) in pages[" ".join(path)], (path, span)
            checked += 1
        if hasattr(cmd, "list_commands"):
            ctx = cmd.context_class(cmd)
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), [*path, name])

    walk(get_command(app), [])
    assert checked > 0


class _Capture(BaseHTTPRequestHandler):
    forms: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + self.headers["Content-Type"].encode()
                                                  + b"\r\n\r\n" + body)
        self.forms.append({part.get_param("name", header="content-disposition"): part.get_content()
                           for part in msg.iter_parts()})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_documented_curl_form_sends_every_tag(tmp_path):
    """`-F tags='sea;dog'` sends "sea" alone (curl reads `;` as a field option); the documented
    `-F 'tags="sea;dog"'` and `-F 'tags=sea|dog'` send both, and the server splits both forms."""
    from lagnh_pyg.extract.tags import split_terms

    page = (ROOT / "docs" / "photo-collection.md").read_text()
    assert """-F 'tags="sea;dog"'""" in page
    server = HTTPServer(("127.0.0.1", 0), _Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api/search"
    (tmp_path / "a.jpg").write_bytes(b"not really a picture")
    try:
        # what the shell passes for -F tags='sea;dog', for the documented form, for the other separator
        for field in ("tags=sea;dog", 'tags="sea;dog"', "tags=sea|dog"):
            subprocess.run(["curl", "-s", "-F", f"image=@{tmp_path / 'a.jpg'}", "-F", field, "-F", "k=10", url],
                           check=True, timeout=30)
    finally:
        server.shutdown()
    naive, quoted, piped = (form["tags"] for form in _Capture.forms[-3:])
    assert naive == "sea" and quoted == "sea;dog" and piped == "sea|dog"
    assert split_terms(quoted) == split_terms(piped) == ["sea", "dog"]
