import numpy as np
import torch

from lagnh_pyg.graph import build_graph, topology_of_graph
from lagnh_pyg.knn import ivf_knn


def _data(n=300, d=16, c=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    aux = rng.random((n, c)).astype(np.float32) * (rng.random((n, c)) < 0.4)
    aux[:5] = 0
    return x, aux


def test_exhaustive_ivf_matches_exact_knn():
    x, _ = _data()
    # every list probed: exact search, so the neighbour sets equal brute force's
    sims, ids = ivf_knn(x, 5, nlist=4, nprobe=4, train_size=300)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    g = u @ u.T
    np.fill_diagonal(g, -np.inf)
    ref = np.sort(-g, axis=1)[:, :5]
    assert np.allclose(-np.sort(-sims, axis=1), -ref, atol=1e-5)


def test_topology_matches_build_graph_and_reads_rows(tmp_path):
    x, aux = _data()
    full = np.concatenate([np.zeros((10, 16), np.float32), x])  # nodes are rows 10.. of the arrays
    np.save(tmp_path / "x.npy", full)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    rows = np.arange(10, 310)
    graph = build_graph(mm, aux, k=5, index="chunked", rows=rows, pca_dim=None, nprobe=1000, chunk=64)
    assert "x" not in graph  # the features stay on disk
    topo = topology_of_graph(graph)
    topo.stats = graph.stats
    ref = topology_of_graph(build_graph(x, aux, k=5, index="flat"))
    assert topo.num_nodes == 300 and topo.stats["degree_min"] >= 5
    key = lambda ei: set((ei[1] * 300 + ei[0]).tolist())  # noqa: E731
    a, b = key(topo.edge_index), key(ref.edge_index)
    # every list probed: the same graph, except where aux vectors tie (equal unit aux rows) at
    # a node's k-th aux neighbour, which either search may pick
    au = aux / np.maximum(np.linalg.norm(aux, axis=1, keepdims=True), 1e-30)
    g = au @ au.T
    np.fill_diagonal(g, -np.inf)
    kth = -np.sort(-g, axis=1)[:, 4]
    for e in a ^ b:
        d, s = divmod(e, 300)
        assert np.isclose(g[s, d], kth[s]) or np.isclose(g[s, d], kth[d]), (s, d)
    assert len(a ^ b) <= 0.05 * len(b)
    assert torch.equal(topo.count, torch.bincount(topo.edge_index[1], minlength=300) + 1)
    # S^a per edge agrees with the definition
    s, d = topo.edge_index.numpy()
    assert np.allclose(topo.s_a.numpy(), np.maximum((au[s] * au[d]).sum(1), 0), atol=1e-6)
    assert (s != d).all()


def test_list_blocked_search_returns_the_ivf_search_result():
    import faiss

    from lagnh_pyg.knn import ivf_self_search

    x, aux = _data(n=500, d=8)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    member = np.ones(500, bool)
    member[::7] = False  # rows outside the index still search it (the aux kNN's rows without aux)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(8), 8, 10, faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.nprobe = 3
    index.add_with_ids(x[member], np.flatnonzero(member).astype(np.int64))
    ref_s, ref_i = index.search(x, 6)
    fresh = faiss.IndexIVFFlat(index.quantizer, 8, 10, faiss.METRIC_INNER_PRODUCT)
    fresh.is_trained, fresh.nprobe = True, 3
    sims, ids = ivf_self_search(fresh, x, 6, member, chunk=128)
    assert np.allclose(sims, ref_s, atol=1e-6)  # same candidates, same scores, best first
    assert (ids == ref_i).mean() > 0.99  # continuous data: ties are rare
    assert not np.isin(ids, np.flatnonzero(~member)).any()
    # a list too short for kk results pads with -inf / -1, as the IVF search does
    one = faiss.IndexIVFFlat(faiss.IndexFlatIP(8), 8, 1, faiss.METRIC_INNER_PRODUCT)
    one.train(x[:20])
    s2, i2 = ivf_self_search(one, x[:20], 25)
    assert np.isneginf(s2[:, 20:]).all() and (i2[:, 20:] == -1).all() and (np.sort(i2[:, :20], 1) == np.arange(20)).all()


def test_sddmm_aux_similarity_equals_the_gathered_one():
    from lagnh_pyg.graph import edge_aux_similarity
    from lagnh_pyg.knn import l2_normalize

    _, aux = _data(n=40)
    au = torch.from_numpy(l2_normalize(aux))
    key = torch.unique(torch.randint(0, 40 * 40, (300,), generator=torch.Generator().manual_seed(0)))
    ei = torch.stack([key % 40, key // 40])  # sorted by target, then source
    ref = edge_aux_similarity(au, ei)
    for chunk in (7, 1 << 20):  # chunks that cut a target's edges in two, and one chunk
        assert torch.allclose(edge_aux_similarity(au, ei, chunk, sddmm=True), ref, atol=1e-6)


def test_pca_ivf_knn_ranks_by_the_projected_rows():
    # the chunked backend's PCA path (what the graph of more than EXACT_MAX_NODES nodes takes):
    # rows in an 8-d subspace of 16-d, so PCA to 8 dims keeps every inner product of the
    # centred unit rows; all lists probed, the search is exact on them
    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.standard_normal((16, 8)))[0].T  # (8, 16) orthonormal rows
    x = (rng.standard_normal((400, 8)) @ basis).astype(np.float32)
    sims, ids = ivf_knn(x, 5, pca_dim=8, nlist=4, nprobe=4, train_size=400, chunk=64)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    c = u - u.mean(0)  # FAISS's PCA centres on the training rows' mean (here all rows)
    g = c @ c.T
    np.fill_diagonal(g, -np.inf)
    ref = -np.sort(-g, axis=1)[:, :5]
    assert np.allclose(sims, ref, atol=1e-4)
    assert np.allclose(np.take_along_axis(g, ids, 1), ref, atol=1e-4)  # the ids are those neighbours


def test_chunked_knn_and_feature_stats_leave_no_mapped_pages(tmp_path):
    from test_utils import _rss_file_kib

    from lagnh_pyg.training.sampled import feature_stats

    # each reads a memory map once, in full: its pages must not stay in the process's RSS
    # (at 1M x 512, 2 GiB through the whole graph search)
    x = np.random.default_rng(0).random((16384, 1024), dtype=np.float32)  # 64 MiB
    np.save(tmp_path / "x.npy", x)
    rows = np.arange(0, 16384, 2)
    ivf_knn(x[:500], 5, rows=np.arange(500), pca_dim=16, nlist=4, train_size=500)  # libraries loaded
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    before = _rss_file_kib()
    sims, ids = ivf_knn(mm, 5, rows, pca_dim=16, nlist=16, train_size=2000, chunk=4096)
    assert _rss_file_kib() - before < 8 * 1024  # the map: 64 MiB (rows every other one: all pages)
    assert np.array_equal((sims, ids), ivf_knn(x, 5, rows, pca_dim=16, nlist=16, train_size=2000, chunk=4096))
    mean, std = feature_stats(mm, rows, chunk=4096)
    assert _rss_file_kib() - before < 8 * 1024
    assert torch.allclose(mean, torch.from_numpy(x[rows].mean(0)), atol=1e-5)
    assert torch.allclose(std, torch.from_numpy(x[rows].std(0, ddof=1)), atol=1e-5)
