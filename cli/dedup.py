"""`lagnh dedup`: near-duplicates of a run's collection within a Hamming radius."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import handle_errors, say


@handle_errors
def dedup(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with database codes.")],
    radius: Annotated[int, typer.Option(help="Largest Hamming distance that counts as a duplicate (0 = same code).")],
    out_json: Annotated[Path | None, typer.Option("--out", help="Write {id: [duplicate ids]} here (imagededup's format).")] = None,
    html: Annotated[Path | None, typer.Option(help="Write a contact sheet of the largest groups here.")] = None,
    chunk: Annotated[int, typer.Option(help="Queries a FAISS range search (bounds memory).")] = 4096,
    groups: Annotated[int, typer.Option(help="Groups on the HTML sheet.")] = 50,
) -> None:
    """Near-duplicate items of RUN_DIR's collection (database + added - deleted) within a
    Hamming radius, by FAISS binary range search.

    Example: lagnh dedup runs/photos32 --radius 2 --out dups.json --html dups.html
    """
    from lagnh_pyg.collection import Collection
    from lagnh_pyg.dedup import find_duplicates, groups_html, write_html

    coll = Collection(run_dir)
    codes, ids = coll.live_codes()
    res = find_duplicates(codes, ids, radius, out_json, chunk=chunk, max_groups=groups)
    say(f"{res.n_with_duplicates} of {res.n_items} items have a duplicate within Hamming radius {radius} "
        f"({res.n_pairs} pairs, {len(res.groups)} largest groups kept)")
    if out_json is not None:
        say(f"wrote {out_json}")
    if html is not None:
        page = groups_html(res, codes, ids, coll.image_of, f"lagnh dedup: radius {radius}",
                           [f"run {coll.run.root} · {coll.run.method} · {coll.run.bits} bits",
                            f"{res.n_with_duplicates} of {res.n_items} items have a duplicate; "
                            "each row is a group, distances to its first item"])
        write_html(html, page)
        say(f"wrote {html}")
