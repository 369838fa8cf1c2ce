import pytest
import torch
from torch_geometric.data import Data

from lagnh_pyg.sampling import TorchNeighborSampler, make_neighbor_loader


def random_graph(n=60, e=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, e), generator=g)
    ei = ei[:, ei[0] != ei[1]]
    ei = torch.unique(ei, dim=1)
    return Data(x=torch.randn(n, 4, generator=g), edge_index=ei, edge_attr=torch.arange(ei.size(1)).float(),
                num_nodes=n)


def reference_all_neighbours(data, seeds, hops):
    """Brute force: nodes in BFS order (seeds first) and every incoming edge of each frontier."""
    src, dst = data.edge_index
    seen, nodes, frontier, edges = set(seeds.tolist()), list(seeds.tolist()), seeds.tolist(), set()
    for _ in range(hops):
        new = []
        for v in frontier:
            for eid in torch.nonzero(dst == v).flatten().tolist():
                edges.add(eid)
                u = int(src[eid])
                if u not in seen:
                    seen.add(u)
                    new.append(u)
        nodes += sorted(new)
        frontier = sorted(new)
    return nodes, edges


@pytest.mark.parametrize("hops", [1, 2])
def test_all_neighbours_matches_bfs(hops):
    data = random_graph()
    loader = make_neighbor_loader(data, [-1] * hops, input_nodes=torch.tensor([3, 7, 11]), batch_size=3,
                                  shuffle=False, backend="torch")
    batch = next(iter(loader))
    nodes, edges = reference_all_neighbours(data, torch.tensor([3, 7, 11]), hops)
    assert batch.n_id.tolist() == nodes
    assert set(batch.e_id.tolist()) == edges
    assert batch.batch_size == 3
    # PyG sliced the edge attributes by our global edge ids, and local ids map back exactly
    assert torch.equal(batch.edge_attr, data.edge_attr[batch.e_id])
    glob = batch.n_id[batch.edge_index]
    assert torch.equal(glob, data.edge_index[:, batch.e_id])
    assert torch.equal(batch.x, data.x[batch.n_id])


def test_fanout_is_respected_and_edges_are_real():
    data = random_graph(n=100, e=2000)
    sampler = TorchNeighborSampler(data, [3, 2], seed=0)
    loader = make_neighbor_loader(data, [3, 2], batch_size=10, shuffle=True, seed=1, backend="torch")
    seen = 0
    for batch in loader:
        seeds = batch.n_id[: batch.batch_size]
        hop1_edges = batch.num_sampled_edges[0]
        dst_hop1 = batch.edge_index[1, :hop1_edges]
        counts = torch.bincount(dst_hop1, minlength=batch.batch_size)[: batch.batch_size]
        indeg = torch.bincount(data.edge_index[1], minlength=data.num_nodes)[seeds]
        assert torch.equal(counts, torch.minimum(indeg, torch.tensor(3)))
        assert torch.equal(batch.n_id[batch.edge_index], data.edge_index[:, batch.e_id])
        assert batch.e_id.unique().numel() == batch.e_id.numel()
        seen += batch.batch_size
    assert seen == 100
    assert sampler.edge_permutation is None


def test_sampling_is_reproducible_under_a_seed():
    data = random_graph(n=80, e=1500)
    a = [b.e_id for b in make_neighbor_loader(data, [4, 4], batch_size=16, seed=5, backend="torch")]
    b = [b.e_id for b in make_neighbor_loader(data, [4, 4], batch_size=16, seed=5, backend="torch")]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_bad_fanout():
    with pytest.raises(ValueError, match="num_neighbors"):
        TorchNeighborSampler(random_graph(), [0])


def test_fanout_with_a_hub_uses_exact_counts():
    # a hub with 200 incoming edges among degree-1 nodes takes the global-sort path
    n = 400
    src = torch.cat([torch.arange(1, 201), torch.arange(201, 400)])
    dst = torch.cat([torch.zeros(200, dtype=torch.long), torch.arange(1, 200)])
    data = Data(edge_index=torch.stack([src, dst]), num_nodes=n)
    batch = next(iter(make_neighbor_loader(data, [5], input_nodes=torch.arange(0, 50), batch_size=50,
                                           shuffle=False, seed=0, backend="torch")))
    counts = torch.bincount(batch.edge_index[1], minlength=50)
    assert counts[0] == 5 and bool((counts[1:50] == 1).all())
    assert torch.equal(batch.n_id[batch.edge_index], data.edge_index[:, batch.e_id])


def test_edges_sorted_by_target_are_sampled_in_place():
    from torch_geometric.sampler import NodeSamplerInput

    # a build_graph topology comes sorted by target, then source: the sampler keeps no copy of
    # its edges and samples what it samples from the same edges in another order
    data = random_graph(n=100, e=2000)
    src, dst = data.edge_index
    order = torch.argsort(dst * 100 + src)
    in_order = Data(edge_index=data.edge_index[:, order], num_nodes=100)
    fast = TorchNeighborSampler(in_order, [3, 2], seed=0)
    slow = TorchNeighborSampler(data, [3, 2], seed=0)
    assert fast.edge_ids is None and fast.col_src.data_ptr() == in_order.edge_index.data_ptr()
    assert slow.edge_ids is not None
    for seeds in (torch.arange(10), torch.tensor([5, 50, 99, 0]), torch.arange(100)):
        a = fast.sample_from_nodes(NodeSamplerInput(None, seeds))
        b = slow.sample_from_nodes(NodeSamplerInput(None, seeds))
        assert torch.equal(a.node, b.node) and torch.equal(a.row, b.row) and torch.equal(a.col, b.col)
        assert torch.equal(order[a.edge], b.edge)  # the same edges, each by its id in its own input


def test_sorted_by_target_check_across_blocks():
    from lagnh_pyg.sampling import _sorted_by_target

    dst = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])
    src = torch.tensor([1, 2, 0, 2, 3, 0, 1, 2])
    for block in (1, 2, 3, 1 << 22):
        assert _sorted_by_target(src, dst, block)
        for i in range(len(dst) - 1):  # any pair out of order, wherever the blocks cut
            s, d = src.clone(), dst.clone()
            s[[i, i + 1]], d[[i, i + 1]] = s[[i + 1, i]], d[[i + 1, i]]
            assert not _sorted_by_target(s, d, block), (block, i)
    assert _sorted_by_target(torch.tensor([0, 0]), torch.tensor([1, 1]))  # a repeated edge is in order
    assert _sorted_by_target(torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))
