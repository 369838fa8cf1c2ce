"""Batch sources: where the steps of an epoch come from. The loop (:func:`~lagnh_pyg.training.loop.fit`)
iterates a source once per epoch and never knows which one it has.

* :class:`FullGraphSource` — ``train.mode: full``: one step per epoch over the whole
  training graph (FAISS kNN topology, fused weights recomputed in every forward pass).
* :class:`FaithfulSource` — ``train.mode: faithful``: the release's shuffled mini-batches of
  ``train.batch_size`` with a dense in-batch graph.
* :class:`SampledSource` — ``train.mode: sampled``: seed-node mini-batches with
  neighbour-sampled subgraphs (:mod:`lagnh_pyg.training.sampled`).

A source owns the random generators that decide its batches; :meth:`state_dict` returns
their states, which go into the checkpoint, so that ``--resume`` continues with exactly the
batches an uninterrupted run would have seen. (torch's global generator, which dropout and
the loss's own draws use, is checkpointed by the loop.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from ..sampling import make_neighbor_loader
from .sampled import BatchFetcher, SampledModule, seeds_only
from .trainer import Step, dense_step_of, graph_step_of


class BatchSource(Protocol):
    def __iter__(self) -> Iterator[Step]: ...  # one epoch of steps

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class FullGraphSource:
    """One step per epoch on the whole graph ``graph`` (on the model's device)."""

    def __init__(self, model: nn.Module, graph: Data) -> None:
        self.model, self.graph = model, graph

    def __iter__(self) -> Iterator[Step]:
        yield graph_step_of(self.model, self.graph)

    def state_dict(self) -> dict[str, Any]:
        return {}  # no randomness of its own

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class FaithfulSource:
    """The release's epoch: a random permutation of the training nodes cut into batches of
    ``batch_size``, each a dense in-batch graph (:meth:`~lagnh_pyg.nn.LAGNH.forward_dense`).

    Args:
        model: the LAGNH model. x, aux: (n, d), (n, c) training nodes on the model's device.
        batch_size: nodes per batch. seed: seed of the permutation's generator.
    """

    def __init__(self, model: nn.Module, x: Tensor, aux: Tensor, batch_size: int, seed: int) -> None:
        self.model, self.x, self.aux, self.batch_size = model, x, aux, int(batch_size)
        self.generator = torch.Generator().manual_seed(int(seed))

    def __iter__(self) -> Iterator[Step]:
        n = self.x.shape[0]
        perm = torch.randperm(n, generator=self.generator)
        for s in range(0, n, self.batch_size):
            idx = perm[s : s + self.batch_size].to(self.x.device)
            yield dense_step_of(self.model, self.x[idx], self.aux[idx])

    def state_dict(self) -> dict[str, Any]:
        return {"permutation": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["permutation"])


class SampledSource:
    """Seed-node mini-batches of neighbour-sampled subgraphs; every loss over the seeds.

    Args:
        module: the forward pass (:class:`~lagnh_pyg.training.sampled.SampledModule`, or its
            DDP wrapper).
        topology: the sampling topology (:func:`~lagnh_pyg.graph.sampling_topology`).
        fetch: turns a loader batch into model input (:class:`BatchFetcher`).
        num_neighbors: fan-out per hop. seeds: this process's seed nodes (None: all).
        batch_size: seeds per batch. seed: seeds the shuffling and the sampler.
        max_batches: cap an epoch at this many batches (None: a true epoch).
        g_steps: generator updates per seed batch (None: ``train.g_steps``, as a full-graph
            step); the runner passes ``train.sampled_g_steps``.
    """

    def __init__(self, module: nn.Module, topology: Data, fetch: BatchFetcher, num_neighbors: Sequence[int],
                 seeds: Tensor | None, batch_size: int, seed: int, max_batches: int | None = None, *,
                 shuffle: bool = True, g_steps: int | None = None) -> None:
        self.module, self.fetch, self.max_batches, self.g_steps = module, fetch, max_batches, g_steps
        self.loader = make_neighbor_loader(topology, num_neighbors, seeds, batch_size=batch_size, shuffle=shuffle,
                                           seed=seed)

    def steps_per_epoch(self) -> int:
        n = len(self.loader)
        return n if self.max_batches is None else min(n, self.max_batches)

    def __iter__(self) -> Iterator[Step]:
        for i, batch in enumerate(self.loader):
            yield sampled_step_of(self.module, self.fetch(batch), self.g_steps)
            if self.max_batches is not None and i + 1 >= self.max_batches:
                break  # before the next batch is sampled: the generators stop where the epoch did

    def _generators(self) -> dict[str, torch.Generator]:
        gens = {"shuffle": self.loader.generator}
        sampler_gen = getattr(getattr(self.loader, "node_sampler", None), "generator", None)
        if isinstance(sampler_gen, torch.Generator):  # ours; PyG's compiled sampler has its own RNG
            gens["sampler"] = sampler_gen
        return gens

    def state_dict(self) -> dict[str, Any]:
        return {name: g.get_state() for name, g in self._generators().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, g in self._generators().items():
            g.set_state(state[name])


def sampled_step_of(module: nn.Module, b: Data, g_steps: int | None = None) -> Step:
    """The step of one fetched sampled batch (:class:`BatchFetcher`): the forward of
    ``module`` (a :class:`~lagnh_pyg.training.sampled.SampledModule`) over the subgraph, every
    loss over its first ``b.batch_size`` nodes (the seeds)."""
    size, rows = int(b.batch_size), getattr(b, "rows", None)

    def forward() -> dict[str, Tensor]:
        return seeds_only(module(b.x, b.aux, b.edge_index, b.s_a, b.count, rows), size)

    split = None
    if isinstance(module, SampledModule):  # not under DDP, whose wrapper must run each whole pass
        split = (lambda: module.weighted_graph(b.x, b.aux, b.edge_index, b.s_a, b.count),
                 lambda g: seeds_only(module.codes(g, rows), size))
    return Step(forward, b.x[:size], b.aux[:size], b.aux_unit[:size], g_steps=g_steps, split=split,
                target_unit=getattr(b, "target_unit", None))
