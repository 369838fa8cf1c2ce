"""`lagnh data add-views`: a dataset copy holding the augmented views `lagnh extract features --views K` made."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import handle_errors, out


@handle_errors
def add_views(
    data_dir: Annotated[Path, typer.Argument(help="A dataset directory.")],
    extraction: Annotated[Path, typer.Argument(help="An extraction directory written by `lagnh extract features --views K`.")],
    out_dir: Annotated[Path, typer.Option("--out", help="The dataset copy to create (files hard-linked where possible).")],
    split: Annotated[str, typer.Option(help="Whose views to store (train: what cibhash and deepbit read).")] = "train",
) -> None:
    """Store the features of augmented views (for the view-based baselines) in a copy of a dataset.

    Example: lagnh extract features data/coco --views 4 --out feats-views/ && lagnh data add-views data/coco feats-views/ --out data/coco-views
    """
    from lagnh_pyg.data.add_views import add_views as _add_views
    from lagnh_pyg.data.store import Dataset

    path = _add_views(data_dir, extraction, out_dir, split)
    v = Dataset.open(path).manifest["views"]
    out.print(f"wrote {path}: {v['k']} views of each of {v['rows']} {split} items")
