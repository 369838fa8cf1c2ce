"""`lagnh data add-views`: a dataset copy that holds the augmented views an extraction made
(:mod:`lagnh_pyg.extract.features` with ``views``; the augmentation: :mod:`lagnh_pyg.extract.views`).
"""

from __future__ import annotations

import numpy as np


def add_views(data_dir, extraction_dir, out, split: str = "train"):
    """A copy of dataset ``data_dir`` at ``out`` holding the views that ``lagnh extract features
    --views K`` wrote to ``extraction_dir``, for the items of ``split`` (matched by item id).

    Files are hard-linked where the file system allows (else copied); the copy's manifest is
    format version 2 with a ``views`` entry and checksums of the two new files. ``out`` is
    built in a temporary sibling and renamed into place.
    """
    import json
    import os
    import shutil
    from pathlib import Path

    from ..errors import InputError
    from ..extract.features import load_extraction
    from ..files import atomic_dir, load_npy, sha256_file
    from .store import VERSION, Dataset, as_stored

    ds = Dataset.open(data_dir)
    ext = Path(extraction_dir)
    manifest = load_extraction(ext)
    if not manifest.get("views"):
        raise InputError(f"extraction {ext} has no views; extract with `lagnh extract features ... --views K`")
    V = load_npy(ext / manifest["views"]["file"], "views", mmap_mode="r")
    if V.ndim != 3 or V.shape[2] != ds.feature_dim:
        raise InputError(f"{ext} holds {V.shape[-1]}-d views but dataset {ds.root} has {ds.feature_dim}-d features")
    where = {i: r for r, i in enumerate((ext / "ids.txt").read_text().splitlines())}
    rows = np.sort(ds.split(split))
    ids = ds.ids
    missing = [ids[r] for r in rows if ids[r] not in where]
    if missing:
        raise InputError(f"{len(missing)} {split} item(s) of {ds.root} have no views in {ext} (first: {missing[0]!r})")
    out = Path(out)
    with atomic_dir(out) as tmp:
        for f in [*ds.manifest.get("checksums", {}), *(["aux_scores.npy"] if (ds.root / "aux_scores.npy").is_file() else [])]:
            dst = tmp / f
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(ds.root / f, dst)
            except OSError:
                shutil.copy2(ds.root / f, dst)
        picked = as_stored(V[[where[ids[r]] for r in rows]], np.float16)
        if not np.isfinite(picked).all():  # checked as stored: float16 overflows beyond 65504
            raise InputError(f"views in {ext} hold NaN or inf as float16; re-extract them")
        np.save(tmp / "views.npy", picked)
        np.save(tmp / "views_rows.npy", rows.astype(np.int64))
        new = dict(ds.manifest)
        new["version"] = VERSION
        new["views"] = {"file": "views.npy", "rows_file": "views_rows.npy", "rows": int(len(rows)), "k": int(V.shape[1]),
                        "dim": ds.feature_dim, "dtype": "float16",
                        "recipe": {**manifest["views"].get("recipe", {}), "extractor": manifest.get("extractor"),
                                   "from": str(ext.resolve()), "split": split}}
        new["checksums"] = {**ds.manifest.get("checksums", {}),
                            **{f: sha256_file(tmp / f) for f in ("views.npy", "views_rows.npy")}}
        (tmp / "manifest.json").write_text(json.dumps(new, indent=2) + "\n")
    return out
