"""Run-level retrieval: evaluate a run's codes, build its index, search it.

These are the library entry points behind ``lagnh evaluate``, ``lagnh index`` and
``lagnh search`` (and what the experiments call). They read what ``lagnh encode`` wrote —
``RUN_DIR/codes/{query,database}.npy`` and ``codes/meta.json``, which names the dataset the
codes came from — and write into ``RUN_DIR/metrics/`` and ``RUN_DIR/index/``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data.store import Dataset
from .errors import InputError
from .files import write_json_atomic
from .index import HammingIndex, is_index_dir
from .metrics import (
    DEFAULT_PK_CUTOFFS,
    RetrievalResult,
    check_protocol,
    evaluate_retrieval,
    tie_rule,
)
from .report.plots import line_plot
from .report.provenance import provenance
from .report.tables import write_csv
from .rerank import (
    DatasetVectors,
    Reranker,
    RerankScore,
    Vectors,
    check_depth,
    own_item_first,
    resolve_score,
    two_stage,
)
from .rerank import query_vectors as make_query_vectors
from .rundir import Run

logger = logging.getLogger(__name__)


def _open_run(run: Run | str | os.PathLike) -> Run:
    return run if isinstance(run, Run) else Run.open(run)


def codes_dataset(run: Run) -> Dataset:
    """The dataset the run's codes were encoded from (``codes/meta.json``), checked unchanged."""
    meta = run.codes_meta()
    data_dir = meta.get("data_dir")
    if not data_dir:
        raise InputError(f"{run.codes_dir() / 'meta.json'} does not name the dataset of the codes; re-run `lagnh encode {run.root}`")
    ds = Dataset.open(data_dir)
    if meta.get("data_fingerprint") and ds.fingerprint != meta["data_fingerprint"]:
        raise InputError(f"dataset {ds.root} changed since the codes were made; re-run `lagnh encode {run.root}`")
    return ds


def _split_codes(run: Run, ds: Dataset, split: str) -> tuple[np.ndarray, np.ndarray]:
    codes = run.load_codes(split)
    idx = ds.split(split)
    if len(codes) != len(idx):
        raise InputError(
            f"{run.codes_dir() / (split + '.npy')} has {len(codes)} rows but the {split} split of {ds.root} has "
            f"{len(idx)} items; re-run `lagnh encode {run.root}`"
        )
    return codes, idx


def topk_label(topk: int | None) -> str:
    return "all" if topk is None else str(topk)


@dataclass
class Evaluation:
    """What :func:`evaluate_run` computed and where it wrote it."""

    result: RetrievalResult
    summary: dict
    files: dict[str, Path] = field(default_factory=dict)


def evaluate_run(
    run: Run | str | os.PathLike,
    topk: int | None = 1000,
    protocol: str = "lagnh",
    *,
    pk_cutoffs: Sequence[int] = DEFAULT_PK_CUTOFFS,
    out_dir: str | os.PathLike | None = None,
    plots: bool = True,
    rerank: int = 0,
    rerank_score: str | RerankScore | None = None,
    device: str = "cpu",
) -> Evaluation:
    """MAP@K, P@K and PR of a run's query codes against its database codes.

    Writes into ``out_dir`` (default ``RUN_DIR/metrics``), every file named by protocol and K:
    ``<protocol>-top<K>.json`` (summary with dataset, split sizes, protocol, software,
    machine), ``…-pk.csv``, ``…-pr.csv`` and, with ``plots``, ``…-pk.png`` and ``…-pr.png``.
    Labels come from the dataset named in ``codes/meta.json``; a dataset without labels is
    refused. With ``rerank`` R > 0 the ranking is two-stage (:mod:`lagnh_pyg.rerank`, by
    ``rerank_score``, default the run's own): the files are named ``<protocol>-top<K>-rerank<R>-<score>…``.
    """
    run = _open_run(run)
    check_protocol(protocol)
    R = check_depth(rerank, "rerank")
    ds = codes_dataset(run)
    ds.require_labels("evaluation")
    qcodes, qidx = _split_codes(run, ds, "query")
    dcodes, didx = _split_codes(run, ds, "database")
    scorer = run_reranker(run, ds, resolve_score(run, rerank_score), qidx, device) if R else None
    res = evaluate_retrieval(qcodes, dcodes, ds.label_rows(qidx), ds.label_rows(didx), topk, protocol,
                             pk_cutoffs=pk_cutoffs, curves=True, rerank=R, scorer=scorer)
    meta = run.codes_meta()
    summary = {
        "run": str(run.root.resolve()),
        "method": run.method,
        "bits": run.bits,
        "model_fingerprint": run.model_fingerprint,
        "encoding": meta.get("encoding"),
        **res.summary(),
        "topk_requested": topk_label(topk),
        "rerank_score": str(scorer.score) if scorer is not None else None,
        **provenance(dataset=str(ds.root.resolve()), data_fingerprint=ds.fingerprint,
                     split_sizes={s: len(ds.split(s)) for s in ("train", "query", "database")}),
    }
    out_dir = Path(out_dir) if out_dir is not None else run.metrics_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{protocol}-top{topk_label(topk)}" + (f"-rerank{R}-{_slug(scorer.score)}" if R else "")
    files = {"json": out_dir / f"{stem}.json"}
    write_json_atomic(files["json"], summary)
    files["pk_csv"] = write_csv(out_dir / f"{stem}-pk.csv", ["protocol", "k", "precision_at_k"],
                                [(protocol, int(k), float(v)) for k, v in zip(res.pk_cutoffs, res.pk)])
    files["pr_csv"] = write_csv(
        out_dir / f"{stem}-pr.csv", ["protocol", "radius", "precision", "recall", "pooled_precision"],
        [(protocol, int(r), float(p), float(rc), float(pp))
         for r, p, rc, pp in zip(res.radius, res.pr_precision, res.pr_recall, res.pr_pooled_precision)],
    )
    if plots:
        name = f"{run.method} {run.bits} bits"
        files["pk_png"] = line_plot(
            out_dir / f"{stem}-pk.png", {name: (res.pk_cutoffs, res.pk)},
            title=f"precision@K — {name} (protocol {protocol}; {tie_rule(protocol, R)})", xlabel="K",
            ylabel="precision@K")
        files["pr_png"] = line_plot(
            out_dir / f"{stem}-pr.png", {name: (res.pr_recall, res.pr_precision)},
            title=f"precision–recall by Hamming radius — {name} (protocol {protocol})", xlabel="recall",
            ylabel="precision")
    return Evaluation(res, summary, files)


def _slug(score: RerankScore) -> str:
    return str(score).replace(":", "").replace(",", "-")


def run_reranker(run: Run, ds: Dataset, score: str | RerankScore, qidx: np.ndarray, device: str = "cpu",
                 db_codes: np.ndarray | None = None, db_rows: np.ndarray | None = None) -> Reranker:
    """The candidate scorer of a run's queries (dataset rows ``qidx``) against its database
    (default: the database split's codes and rows): their stored features and aux, and for
    ``asym`` the model's real-valued output of each query."""
    score = RerankScore.parse(score)
    needs_inputs = score.needs("asym") or score.needs("features")
    feats = ds.feature_rows(qidx) if needs_inputs else None
    aux = ds.aux_rows(qidx) if score.needs("asym") or score.needs("aux") else None
    qv = make_query_vectors(score, feats, aux, lambda: _encoder(run, device))
    if db_codes is None:
        db_codes, db_rows = _split_codes(run, ds, "database")
    return Reranker(score, qv, db_codes, DatasetVectors(ds, db_rows))


def _encoder(run: Run, device: str):
    from .encoders import load_encoder

    return load_encoder(run, device)


# -- index -----------------------------------------------------------------------------------
def build_index(run: Run | str | os.PathLike, kind: str = "flat", *, save: bool = True,
                device: str = "cpu", **params: Any) -> HammingIndex:
    """A :class:`HammingIndex` of the run's database codes with the dataset's item ids;
    saved to ``RUN_DIR/index`` unless ``save=False``."""
    run = _open_run(run)
    ds = codes_dataset(run)
    codes, idx = _split_codes(run, ds, "database")
    if not len(codes):
        raise InputError(f"the database of {ds.root} is empty: nothing to index")
    ids = ds.ids
    if kind in ("hash", "multihash") and params.get("hash_bits") is None:
        # about one item a bucket: log2(n) bits per table (FAISS's advice), within the code
        nhash = params.get("nhash")
        per_table = run.bits // max(1, int((4 if kind == "multihash" else 1) if nhash is None else nhash))
        params["hash_bits"] = int(max(1, min(per_table, 24, max(8, np.log2(len(codes))))))
    index = HammingIndex(
        run.bits, kind, model_fingerprint=run.model_fingerprint, method=run.method, device=device,
        extra={"data_dir": str(ds.root.resolve()), "data_fingerprint": ds.fingerprint, "split": "database"},
        **params,
    )
    index.add(codes, [ids[i] for i in idx], model_fingerprint=run.model_fingerprint)
    if save:
        index.save(run.index_dir())
    return index


def open_index(run: Run, device: str = "cpu") -> tuple[HammingIndex, bool]:
    """The run's saved index (checked against its model and dataset), or an exact in-memory
    one built from the database codes when none was saved. Returns ``(index, was_saved)``."""
    path = run.index_dir()
    if not is_index_dir(path):
        return build_index(run, save=False, device=device), False
    index = HammingIndex.load(path, expect_fingerprint=run.model_fingerprint, device=device)
    meta = run.codes_meta()
    if index.extra.get("data_fingerprint") not in (None, meta.get("data_fingerprint")):
        raise InputError(f"index {path} was built on another dataset than the run's codes; rebuild it with `lagnh index {run.root}`")
    return index, True


# -- search ----------------------------------------------------------------------------------
@dataclass
class SearchHit:
    rank: int
    id: str
    distance: int
    path: str | None = None
    relevant: bool | None = None
    labels: list[str] | None = None
    score: float | None = None  # the re-rank score, when re-ranked


@dataclass
class SearchOutcome:
    query_id: str
    query_path: str | None
    query_labels: list[str] | None
    hits: list[SearchHit]
    index_kind: str
    index_saved: bool
    dataset: Dataset
    rerank: int = 0
    rerank_score: str | None = None
    notes: list[str] = field(default_factory=list)


def _label_names(ds: Dataset, row: np.ndarray) -> list[str]:
    names = ds.label_names or [f"label_{j}" for j in range(len(row))]
    return [names[j] for j in np.flatnonzero(row)]


def query_code_for_item(run: Run, ds: Dataset, row: int, device: str = "cpu") -> np.ndarray:
    """The packed code of dataset row ``row``: from the stored codes when the row is in the
    query or database split, otherwise encoded now with the run's model."""
    for split in ("database", "query"):
        idx = ds.split(split)
        hit = np.flatnonzero(idx == row)
        if hit.size:
            codes = run.load_codes(split)
            if len(codes) == len(idx):
                return codes[hit[0] : hit[0] + 1]
    from .codes import pack_codes
    from .encoders import load_encoder

    enc = load_encoder(run, device)
    rows = np.array([row])
    return pack_codes(np.asarray(enc.encode(ds.feature_rows(rows), ds.aux_rows(rows))))


@dataclass
class ImageQuery:
    """A new picture as a query: its packed ``code``, the ``vectors`` re-ranking reads (input
    features, aux, the model's real-valued output) and the ``notes`` of its featurizing."""

    code: np.ndarray
    vectors: Vectors
    notes: list[str]


def image_query(
    run: Run | str | os.PathLike, image: str | os.PathLike, device: str = "cpu", tags: Sequence[str] | None = None
) -> ImageQuery:
    """A new picture featurized as the run's dataset was
    (:func:`lagnh_pyg.extract.featurize_like`), then encoded by the run's model.

    ``tags`` (``"a;b"`` cells) give the picture's aux where the dataset's aux is a tag vocabulary.
    """
    from .extract import featurize_like
    from .rerank import encode_with_output

    run = _open_run(run)
    image = Path(image)
    if not image.is_file():  # a FIFO would block the decoder forever
        raise InputError(f"image {image} {'is not a regular file' if image.exists() else 'does not exist'}")
    ds = codes_dataset(run)
    notes: list[str] = []
    features, aux = featurize_like(ds, [str(image)], device, tags=tags, notes=notes)
    code, z = encode_with_output(_encoder(run, device), features, aux)
    return ImageQuery(code, Vectors(z, features, aux), notes)


def encode_image(
    run: Run | str | os.PathLike, image: str | os.PathLike, device: str = "cpu", tags: Sequence[str] | None = None
) -> np.ndarray:
    """The packed code of a new picture (:func:`image_query`)."""
    return image_query(run, image, device, tags).code


def search_run(
    run: Run | str | os.PathLike,
    *,
    item_id: str | None = None,
    query_code: np.ndarray | None = None,
    query_label_row: np.ndarray | None = None,
    k: int = 10,
    device: str = "cpu",
    rerank: int = 0,
    rerank_score: str | RerankScore | None = None,
    query_vectors: Vectors | None = None,
) -> SearchOutcome:
    """The top-``k`` database items of one query: a dataset item (``item_id``) or a packed
    ``query_code`` (a new image encoded by the caller, with its ``query_vectors``).

    Ranked by Hamming distance, ties by database order, a query item's own entry first among
    those tied with it; with ``rerank`` R > 0 the Hamming top R re-ranked by ``rerank_score``
    (default: the run's own, :func:`lagnh_pyg.rerank.run_score`)
    (:mod:`lagnh_pyg.rerank`). A code without vectors is not re-ranked (a note says so)."""
    run = _open_run(run)
    if (item_id is None) == (query_code is None):
        raise InputError("give exactly one query: an item id or a query code")
    R = check_depth(rerank, "rerank")
    score = resolve_score(run, rerank_score)
    index, saved = open_index(run, device)
    ds = codes_dataset(run)
    q_path = q_labels = None
    if item_id is not None:
        try:
            row = ds.ids.index(str(item_id))
        except ValueError:
            raise InputError(f"item {item_id!r} is not in dataset {ds.root} (see its ids.txt)") from None
        query_code = query_code_for_item(run, ds, row, device)
        paths = ds.paths
        q_path = paths[row] if paths else None
        if ds.has_labels:
            query_label_row = np.asarray(ds.labels[row])
        query_id = str(item_id)
        if R:
            rows = np.array([row])
            query_vectors = make_query_vectors(score, ds.feature_rows(rows), ds.aux_rows(rows),
                                               lambda: _encoder(run, device))
    else:
        query_id = "query image"
    if query_label_row is not None:
        q_labels = _label_names(ds, query_label_row)
    notes = [] if not R or query_vectors is not None else ["a code without features is ranked by Hamming distance only"]
    for n in notes:
        logger.warning("%s", n)
    R = R if query_vectors is not None else 0
    r = index.search(np.asarray(query_code, np.uint8).reshape(1, -1), max(k, R))
    found = r.positions[0] >= 0
    pos, dist, ids = r.positions[0][found], r.distances[0][found], [i for i, f in zip(r.ids[0], found) if f]
    scores = np.full(len(pos), np.nan)
    if R:
        order, scores = two_stage(score, query_vectors, pos, index.codes_at(pos),
                                  DatasetVectors(ds, ds.split("database")), R)
        pos, dist, ids = pos[order], dist[order], [ids[j] for j in order]
    ids, dist, scores = own_item_first(ids, dist, scores, item_id if item_id is not None and item_id in index else None)
    hits = []
    id_to_row = {v: i for i, v in enumerate(ds.ids)}
    for rank, j in enumerate(range(min(k, len(ids))), start=1):
        drow = id_to_row[ids[j]]
        h = SearchHit(rank, ids[j], int(dist[j]), path=ds.paths[drow] if ds.paths else None,
                      score=None if np.isnan(scores[j]) else float(scores[j]))
        if ds.has_labels:
            lab = np.asarray(ds.labels[drow])
            h.labels = _label_names(ds, lab)
            if query_label_row is not None:
                h.relevant = bool(np.any((lab > 0) & (np.asarray(query_label_row) > 0)))
        hits.append(h)
    return SearchOutcome(query_id, q_path, q_labels, hits, index.kind, saved, ds, R, str(score) if R else None, notes)
