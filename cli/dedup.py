"""`lagnh dedup`: near-duplicates of a run's collection within a Hamming radius."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lagnh_pyg.dedup import DEFAULT_MIN_COSINE
from lagnh_pyg.errors import InputError

from .common import handle_errors, say


@handle_errors
def dedup(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with database codes.")],
    radius: Annotated[int, typer.Option(help="Largest Hamming distance of a candidate pair (0 = same code).")],
    min_cosine: Annotated[str, typer.Option(help=f"A candidate pair counts only when the cosine of the two items' stored features is at least this (default {DEFAULT_MIN_COSINE}: chosen on real photos' crops, mirrors, JPEG, rotations and more).")] = str(DEFAULT_MIN_COSINE),
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Confirm candidate pairs by feature cosine (--no-verify: every pair within the radius counts, groups are connected components).")] = True,
    out_json: Annotated[Path | None, typer.Option("--out", help="Write {id: \\[ids of its duplicates]} here (imagededup's format).")] = None,
    html: Annotated[Path | None, typer.Option(help="Write a contact sheet of the largest groups here (members by distance).")] = None,
    chunk: Annotated[int, typer.Option(help="Queries a FAISS range search (bounds memory).")] = 4096,
    groups: Annotated[int, typer.Option(help="Groups shown (printed, or on the HTML sheet).")] = 50,
) -> None:
    """Near-duplicate items of RUN_DIR's collection (database + added - deleted): candidate pairs
    within a Hamming radius (FAISS binary range search), each confirmed by the cosine of the
    items' stored features, grouped around representatives (a star: every member is a confirmed
    duplicate of its representative, so groups never chain). Without --out or --html the groups
    are printed.

    Example: lagnh dedup runs/photos32 --radius 10 --out dups.json --html dups.html
    """
    from lagnh_pyg.collection import Collection
    from lagnh_pyg.dedup import (
        check_min_cosine,
        find_duplicates,
        groups_html,
        groups_text,
        write_html,
    )
    from lagnh_pyg.ownership import check_output_file

    threshold = check_min_cosine(min_cosine)
    if groups < 1:
        raise InputError(f"--groups must be a positive integer, got {groups}")
    if out_json is not None and html is not None and out_json.absolute() == html.absolute():
        raise InputError(f"--out and --html both name {out_json}; give two files")
    for what, p in (("--out file", out_json), ("--html file", html)):
        if p is not None:
            check_output_file(p, what)  # writable, and never a file of a run or a dataset
    coll = Collection(run_dir)
    for what, p in (("--out file", out_json), ("--html file", html)):  # before any work, never over a picture it reads
        if p is not None:
            check_output_file(p, what, inputs=coll.picture_paths)
    codes, ids = coll.live_codes()
    res = find_duplicates(codes, ids, radius, out_json, chunk=chunk, max_groups=groups,
                          features=coll.live_features(ids) if verify else None, min_cosine=threshold)
    how = (f"confirmed by feature cosine >= {threshold:g}" if verify else "not confirmed (--no-verify)")
    say(f"{res.n_with_duplicates} of {res.n_items} items have a duplicate: {res.n_pairs} pairs within Hamming radius "
        f"{radius}, {how}; {res.n_groups} {res.grouping} groups" + (f", {len(res.groups)} largest shown" if res.n_groups
                                                                   > len(res.groups) else ""))
    if verify:
        say(f"{res.n_candidates} candidate pairs from the codes, {res.n_candidates - res.n_pairs} not confirmed"
            + (f" ({res.n_unverifiable} with an item whose features are not stored)" if res.n_unverifiable else ""))
    if out_json is None and html is None:
        for line in groups_text(res, ids):
            say(line)
    if out_json is not None:
        say(f"wrote {out_json}")
    if html is not None:
        page = groups_html(res, codes, ids, coll.image_of, f"lagnh dedup: radius {radius}",
                           [f"run {coll.run.root} · {coll.run.method} · {coll.run.bits} bits",
                            f"{res.n_with_duplicates} of {res.n_items} items have a duplicate ({how}); each row is a "
                            f"{res.grouping} group: its representative, then its members by Hamming distance to it"])
        write_html(html, page)
        say(f"wrote {html}")
