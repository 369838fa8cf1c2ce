"""New items against a trained LAGNH: the training nodes they link to (the training graph's own
rule, :class:`TrainingNeighbours`) and their codes' continuous values (:class:`LagnhEncoder`).

The ``neighbours``, ``self`` and ``faithful`` encodings are described in :mod:`lagnh_pyg.encode`,
which loads a run's encoder (its checkpoint, cache and training rows) and re-exports these
names. They live in the training layer because training itself encodes new items once: the
codes' rotation (:mod:`lagnh_pyg.training.rotation`) is fitted on training items encoded as
new items are.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..graph import normalize_edge_weight, pair_aux_similarity
from ..knn import (
    CHUNK,
    EXACT_MAX_NODES,
    NPROBE,
    TRAIN_SIZE,
    exact_index,
    ivf_description,
    l2_normalize,
    make_index,
    read_rows,
)
from ..runtime import drop_mapped_pages
from .semantics import semantic_rows

logger = logging.getLogger("lagnh_pyg.encode")

ENCODINGS = ("neighbours", "self", "faithful")
SIM_CHUNK = 1024  # new items per block
RERANK_SLACK = 8  # FAISS candidates beyond k, re-ranked exactly (see TrainingNeighbours)
RERANK_BLOCK = 256  # new items per exact re-rank block
# past EXACT_MAX_NODES training nodes (TrainingNeighbours): the chunked index's projection and
# candidates re-ranked per list (lists searched: knn.NPROBE, as the training graph's chunked kNN)
PCA_DIM, WIDE_CANDIDATES = 64, 64

class TrainingNeighbours:
    """The training nodes a new item links to, by the training graph's rule.

    :func:`~lagnh_pyg.graph.build_graph` gives training node i the edges to its ``k`` nearest
    nodes by cosine on the input features and to its ``k`` nearest by cosine on the aux rows
    with a positive similarity (when it has aux). A new item gets the same: the union of both
    lists over the training nodes. FAISS proposes candidates per list; they are re-ranked
    exactly (float64, ties to the lower node id), so that the choice never depends on the
    other items searched with it.

    Up to ``EXACT_MAX_NODES`` training nodes (``graph.index`` auto or flat) the candidates are
    the exact top ``k + RERANK_SLACK`` (:func:`~lagnh_pyg.knn.exact_index`, the unit rows in
    memory). Beyond (or ``graph.index: ivf``), as the training graph's chunked backend does,
    the index is built in chunks over the memory-mapped rows (:func:`_chunked_index`: PCA to
    ``PCA_DIM`` dimensions for the features, IVF), proposes ``WIDE_CANDIDATES``, and the
    re-rank reads those rows from the memory map: memory is N x ``PCA_DIM`` floats plus the
    aux rows, not N x d.

    Args:
        features: (n, d) training features (the model's input), or (M, d) with ``rows``
            selecting the n training rows (a memory map is read in chunks, never loaded).
        aux: (n, c) training aux. k: ``graph.k``. sources: ``graph.sources``.
        index: ``graph.index`` (auto, flat, ivf). rows: see ``features``.
        semantic: with ``graph.semantics: denoised``, the trained model: the aux list ranks
            by its denoised semantics (:meth:`~lagnh_pyg.nn.LAGNH.semantic`), of the
            training items and of the new ones, as the training graph's did.

    Call with (m, d) features and (m, c) aux; returns (m, 2k) training ids, -1 padded, each
    row without repeats.
    """

    def __init__(self, features, aux: np.ndarray, k: int, sources: str = "both", index: str = "auto",
                 rows: np.ndarray | None = None, semantic=None) -> None:
        self.k, self.semantic = int(k), semantic
        n = len(rows) if rows is not None else features.shape[0]
        wide = index == "ivf" or (index == "auto" and n > EXACT_MAX_NODES)
        self.parts = []  # (unit rows by node id, their node ids, FAISS index, candidates, aux: positive only)
        if sources in ("visual", "both"):
            if wide:
                base = _UnitRows(features, rows)
                self.parts.append((base, None, _chunked_index(base, n, PCA_DIM), WIDE_CANDIDATES, False))
            else:
                unit = l2_normalize(features if rows is None else features[rows])
                self.parts.append((unit, None, exact_index(unit), self.k + RERANK_SLACK, False))
        if sources in ("aux", "both"):
            unit = l2_normalize(aux if semantic is None else semantic_rows(semantic, features, aux, rows))
            has = np.flatnonzero(np.linalg.norm(unit, axis=1) > 0)
            if len(has) > k:  # as build_graph: the aux kNN needs more than k items with aux
                idx = _chunked_index(unit[has], len(has), None) if wide else exact_index(unit[has])
                self.parts.append((unit[has], has, idx, WIDE_CANDIDATES if wide else self.k + RERANK_SLACK, True))

    def __call__(self, features: np.ndarray, aux: np.ndarray) -> np.ndarray:
        m = len(features)
        cols = []
        if self.semantic is not None and any(positive for *_, positive in self.parts):
            aux = semantic_rows(self.semantic, features, aux, None)
        for base, node_ids, idx, kk, positive in self.parts:
            q = l2_normalize(aux if positive else features)
            kk = min(kk, len(base))
            _, cand = idx.search(q, kk)
            top = np.empty((m, min(self.k, kk)), np.int64)
            for s in range(0, m, RERANK_BLOCK):  # (block, kk, d) float64 rows at a time
                top[s : s + RERANK_BLOCK] = self._rerank(base, node_ids, cand[s : s + RERANK_BLOCK],
                                                         q[s : s + RERANK_BLOCK], positive)
            cols.append(top)
        if not cols:
            return np.full((m, 0), -1, dtype=np.int64)
        ids = np.sort(np.concatenate(cols, 1), axis=1)
        ids[:, 1:][ids[:, 1:] == ids[:, :-1]] = -1  # a node in both lists is one edge
        return ids

    def release(self) -> None:
        """Drop the resident pages of the memory-mapped rows read so far (the re-rank's):
        :func:`~lagnh_pyg.runtime.drop_mapped_pages`."""
        for base, *_ in self.parts:
            if isinstance(base, _UnitRows):
                drop_mapped_pages(base.arr)

    def _rerank(self, base, node_ids: np.ndarray | None, cand: np.ndarray, q: np.ndarray, positive: bool) -> np.ndarray:
        """The ``k`` best of the FAISS candidates by exact cosine (ties: lower id); -1 where
        missing (or, for aux, not positive)."""
        ok = cand >= 0
        safe = np.maximum(cand, 0)
        sims = np.einsum("mkd,md->mk", base[safe].astype(np.float64), q.astype(np.float64))
        sims = np.where(ok, sims, -np.inf)
        ids = np.where(ok, safe if node_ids is None else node_ids[safe], np.iinfo(np.int64).max)
        order = np.lexsort((ids, -sims), axis=1)[:, : self.k]  # by similarity, ties: lower id
        top, top_s = np.take_along_axis(ids, order, 1), np.take_along_axis(sims, order, 1)
        keep = np.isfinite(top_s) & ((top_s > 0) if positive else True)
        return np.where(keep, top, -1)


class _UnitRows:
    """Unit (L2-normalised) training rows read on demand from a (memory-mapped) array:
    ``unit[ids]`` for ids of any shape, ``len``, ``shape``, and ``chunk(s, e)``."""

    def __init__(self, arr, rows: np.ndarray | None) -> None:
        self.arr, self.rows = arr, rows
        self.n = len(rows) if rows is not None else arr.shape[0]
        self.shape = (self.n, arr.shape[1])

    def __len__(self) -> int:
        return self.n

    def chunk(self, s: int, e: int) -> np.ndarray:
        return l2_normalize(read_rows(self.arr, self.rows, s, e))

    def __getitem__(self, ids: np.ndarray) -> np.ndarray:
        flat = np.asarray(ids).reshape(-1)
        uniq, inv = np.unique(flat, return_inverse=True)  # sorted: sequential reads of the map
        rows = uniq if self.rows is None else self.rows[uniq]
        unit = l2_normalize(np.asarray(self.arr[rows], dtype=np.float32))
        return unit[inv].reshape(*np.shape(ids), self.shape[1])


def _chunked_index(base, n: int, pca_dim: int | None, train_size: int = TRAIN_SIZE, chunk: int = CHUNK, seed: int = 0):
    """A FAISS IVF index (:func:`~lagnh_pyg.knn.make_index`, L2 on unit rows: the cosine order)
    over ``base`` (an array or :class:`_UnitRows`), trained on a sample and filled chunk by
    chunk; with ``pca_dim``, the rows are projected first (L2 survives the PCA's centring,
    inner products would not). Candidates only: the caller re-ranks them exactly."""
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(train_size, n), replace=False))
    train = np.ascontiguousarray(base[sample], dtype=np.float32)
    description = ivf_description(n, len(train), pca_dim=pca_dim, dim=train.shape[1])
    index = make_index(train.shape[1], description, "l2", train=train, nprobe=NPROBE, gpu=False)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        block = base.chunk(s, e) if isinstance(base, _UnitRows) else base[s:e]
        index.add(np.ascontiguousarray(block, dtype=np.float32))
    if isinstance(base, _UnitRows):
        drop_mapped_pages(base.arr)
    return index


class LagnhEncoder:
    """A trained LAGNH model plus what it needs of the training nodes.

    Args:
        model: the trained :class:`~lagnh_pyg.nn.LAGNH` (put in eval mode here).
        mode: ``neighbours``, ``self`` or ``faithful``.
        neighbours: the training-neighbour rule (``neighbours``): a :class:`TrainingNeighbours`.
        cache: ``xhat`` (n, a), ``z1`` (n, h), ``degree`` (n,), ``aux_unit`` (n, c) of the
            training nodes (``neighbours``).
        batch_size: the faithful encoding's batch.
        device: torch device.
    """

    def __init__(self, model, mode: str = "neighbours", neighbours: TrainingNeighbours | None = None,
                 cache: dict[str, Tensor] | None = None, batch_size: int = 256, device: str = "cpu") -> None:
        if mode not in ENCODINGS:
            raise InputError(f"unknown encoding {mode!r}; use one of {', '.join(ENCODINGS)}")
        if mode != "faithful" and not model.attention.batch_independent:
            raise InputError(f"this model attends within its batch (attention=batch); encode it with "
                             f"--encoding faithful, not {mode}")
        if mode == "neighbours" and (cache is None or neighbours is None):
            raise InputError("neighbours encoding needs the training nodes' cache (encoder.safetensors) and their "
                             "neighbour index")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.mode, self.batch_size = mode, int(batch_size)
        self.training_neighbours = neighbours
        self.cache = None if cache is None else {n: t.to(self.device) for n, t in cache.items()}
        self._maps = list(getattr(cache, "maps", ())) if self.device.type == "cpu" else []
        self.bits = model.bits
        self.batch_independent = mode != "faithful"
        self.encoding_name = mode
        if mode == "faithful":
            self.encode_chunk_multiple = self.batch_size

    @torch.no_grad()
    def encode(self, features: np.ndarray, aux: np.ndarray) -> np.ndarray:
        """(n, d) features and (n, c) aux -> (n, bits) float32 z; positive entries are 1-bits."""
        features = np.asarray(features)
        aux = np.asarray(aux)
        if features.ndim != 2 or features.shape[1] != self.model.feature_dim:
            raise InputError(f"features have shape {features.shape}; this model expects (n, {self.model.feature_dim})")
        if aux.shape != (features.shape[0], self.model.aux_dim):
            raise InputError(f"aux has shape {aux.shape}; expected ({features.shape[0]}, {self.model.aux_dim})")
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(self.device)
        a = torch.from_numpy(np.ascontiguousarray(aux, dtype=np.float32)).to(self.device)
        if self.mode == "faithful":
            parts = [self.model.forward_dense(x[s : s + self.batch_size], a[s : s + self.batch_size])["z"]
                     for s in range(0, len(x), self.batch_size)]
            z = torch.cat(parts) if parts else x.new_zeros((0, self.bits))
        else:
            z = torch.cat([self._encode_block(x[s : s + SIM_CHUNK], a[s : s + SIM_CHUNK],
                                              features[s : s + SIM_CHUNK], aux[s : s + SIM_CHUNK])
                           for s in range(0, len(x), SIM_CHUNK)]) if len(x) else x.new_zeros((0, self.bits))
        return self.model.rotate(z).float().cpu().numpy()

    def _release(self) -> None:
        """Drop the resident pages of the memory maps a block of ``SIM_CHUNK`` items read (the
        cache rows of its training neighbours, the dataset rows of its re-rank candidates):
        at 1M training nodes, dropping them once per 8,192 items let ~3.5 GiB pile up."""
        for arr in self._maps:
            drop_mapped_pages(arr)
        if self.training_neighbours is not None:
            self.training_neighbours.release()

    def neighbours(self, features: np.ndarray, aux: np.ndarray, xhat: Tensor, aux_unit: Tensor
                   ) -> tuple[Tensor, Tensor, Tensor]:
        """The edges from training nodes into the new items (:class:`TrainingNeighbours`) and
        their raw fused weights S_jq (Eq. 3-5 on the attentive features, trained sigma).

        Returns:
            (new item of each edge (E,), training node (E,), weight (E,)).
        """
        m = self.model
        ids = torch.from_numpy(self.training_neighbours(features, aux)).to(xhat.device)
        q, col = (ids >= 0).nonzero(as_tuple=True)
        t = ids[q, col]
        xh_t = self.cache["xhat"][t]
        s_a = pair_aux_similarity(self.cache["aux_unit"][t], aux_unit[q])  # Eq. 4
        n_t = t.numel()
        ei = torch.stack([torch.arange(n_t, device=t.device), n_t + torch.arange(n_t, device=t.device)])
        w = m.edge_weights(torch.cat([xh_t, xhat[q]]), ei, s_a)
        return q, t, w

    def _encode_block(self, x: Tensor, aux: Tensor, features: np.ndarray, aux_np: np.ndarray) -> Tensor:
        m = self.model
        xhat = m.attentive_features(x, aux)
        aux_unit = F.normalize(aux, dim=1)
        n_new = x.shape[0]
        w_self = m.self_weight(aux_unit)
        new = torch.arange(n_new, device=x.device)
        if self.mode == "self":
            ei = torch.stack([new, new])
            z1 = m.generator.layer1(xhat, ei, torch.ones(n_new, device=x.device))
            return m.generator.layer2(z1, ei, torch.ones(n_new, device=x.device))
        q, t, w = self.neighbours(np.asarray(features), np.asarray(aux_np), xhat, aux_unit)
        # a small graph: the selected training nodes, then the new nodes; edges only into the new,
        # normalised with the training nodes' whole-graph degrees and the new items' own
        sel, local = torch.unique(t, return_inverse=True)
        n_sel = sel.numel()
        ei = torch.cat([torch.stack([local, n_sel + q]), torch.stack([n_sel + new, n_sel + new])], 1)
        deg_q = torch.zeros(n_new, dtype=w.dtype, device=w.device).index_add_(0, q, w) + w_self
        ew, _ = normalize_edge_weight(ei, torch.cat([w, w_self]), n_sel + n_new, m.normalization,
                                      degree=torch.cat([self.cache["degree"][sel], deg_q]))
        z1_new = m.generator.layer1(torch.cat([self.cache["xhat"][sel], xhat]), ei, ew)[n_sel:]
        z = m.generator.layer2(torch.cat([self.cache["z1"][sel], z1_new]), ei, ew)[n_sel:]
        self._release()
        return z


def dataset_neighbours(ds, cfg, model=None) -> TrainingNeighbours:
    """:class:`TrainingNeighbours` over the training split of dataset ``ds`` (features read
    from its memory map) with the neighbour rule of config ``cfg`` (``model``: the trained
    model, whose denoised semantics the rule of ``graph.semantics: denoised`` needs)."""
    rows = ds.split("train")
    t0 = time.perf_counter()
    semantic = None
    if cfg.graph.semantics == "denoised":
        if model is None or not model.has_semantics:
            raise InputError("graph.semantics=denoised links new items by the model's denoised semantics; "
                             "this model has none (re-train it)")
        semantic = model
    near = TrainingNeighbours(ds.features, ds.aux_rows(rows), cfg.graph.k, cfg.graph.sources, cfg.graph.index,
                              rows=rows, semantic=semantic)
    logger.info(f"neighbour index over {len(rows)} training items built in {time.perf_counter() - t0:.1f}s")
    return near
