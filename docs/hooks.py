"""MkDocs hooks (mkdocs.yml): the CLI reference (cli.md) is generated from the Typer app when
the site is built, so it is what `lagnh ... --help` prints, command by command."""

from __future__ import annotations

import re

MARKER = "<!-- generated: lagnh --help of every command -->"
WIDTH = "80"  # the terminal width the help is laid out for (fits the page's code column)
# the docstrings' Sphinx roles (:class:`~a.b.C`), which mkdocstrings leaves as text
ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc):<code>(~?)([\w.]+)</code>")


def help_pages() -> list[tuple[list[str], str]]:
    """``(command path, its --help text)`` for ``lagnh`` and every group and command under it,
    depth first in the order ``lagnh --help`` lists them."""
    from typer.main import get_command
    from typer.testing import CliRunner

    from lagnh_pyg.cli.main import app

    runner = CliRunner()
    pages: list[tuple[list[str], str]] = []

    def walk(cmd, path: list[str]) -> None:
        res = runner.invoke(app, [*path, "--help"], prog_name="lagnh", env={"COLUMNS": WIDTH, "NO_COLOR": "1"})
        if res.exit_code != 0:
            raise RuntimeError(f"lagnh {' '.join(path)} --help failed: {res.output}")
        pages.append((path, res.output.rstrip()))
        if hasattr(cmd, "list_commands"):  # a group (Typer's click)
            ctx = cmd.context_class(cmd)
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), [*path, name])

    walk(get_command(app), [])
    return pages


def cli_reference() -> str:
    """The markdown of the reference: a section per command holding its ``--help``."""
    parts = []
    for path, text in help_pages():
        depth = min(len(path), 2) + 2
        parts.append(f"{'#' * depth} `{' '.join(['lagnh', *path])}`\n\n```text\n{text}\n```\n")
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    if page.file.src_uri == "cli.md":
        if MARKER not in markdown:
            raise RuntimeError(f"docs/cli.md lost its marker {MARKER}")
        return markdown.replace(MARKER, cli_reference())
    return markdown


def on_page_content(html: str, page, **kwargs) -> str:
    """The API reference's docstrings: ``:class:`~a.b.C``` shows as ``C`` (``a.b.C`` without
    the ``~``), and a "Example::" paragraph as "Example:"."""
    html = ROLE.sub(lambda m: f"<code>{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}</code>", html)
    return html.replace("::</p>", ":</p>")

