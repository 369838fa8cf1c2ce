"""Distributed data-parallel helpers (PyTorch DDP under ``torchrun``).

Each rank holds a replica of the graph and owns a shard of the seed nodes; the generator's
gradients are averaged by DDP, the discriminator's by hooks on its own updates (gloo on CPU,
NCCL on GPU). Rank 0 alone writes the run directory; checkpoints hold every rank's RNG states. This is
PyG's recommended path for multi-GPU training now that ``torch_geometric.distributed`` is
deprecated.

Launch::

    torchrun --nproc_per_node=2 -m lagnh_pyg train DATA --config configs/demo.yaml \\
        --bits 32 --out runs/ddp --distributed --set train.mode=sampled
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import InputError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"  # where collectives' tensors live (NCCL needs CUDA tensors)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, nodes: torch.Tensor) -> torch.Tensor:
        """This rank's share of ``nodes``: every ``world_size``-th element from ``rank``.

        All shards are cut to the same length so that every rank runs the same number of
        steps (DDP's collectives would otherwise hang on the last, shorter batch).
        """
        if not self.enabled:
            return nodes
        per_rank = nodes.numel() // self.world_size
        if per_rank == 0:
            raise InputError(f"{nodes.numel()} seed nodes cannot be shared by {self.world_size} ranks")
        return nodes[self.rank :: self.world_size][:per_rank]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_gather_object(self, obj):
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` alone)."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def all_reduce_mean(self, value: float) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world_size


def init_distributed(device: str) -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment.

    Backend: NCCL for CUDA devices, gloo otherwise. Raises a clear error when the
    environment variables of a launcher are missing.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise InputError("--distributed needs a launcher: run under `torchrun --nproc_per_node=N -m lagnh_pyg train ...`")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
        return DistContext(rank=rank, world_size=world, local_rank=local, device=f"cuda:{local}")
    return DistContext(rank=rank, world_size=world, local_rank=local)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
