"""The update rules of LAGNH (Eq. 8-12): the model, the discriminator, their optimisers.

One step, as released: a discriminator update on the codes of a no-grad forward pass, then
``train.g_steps`` generator updates, each a full forward pass; Adam for both. A step is
described by a :class:`Step` (which nodes the losses cover and how to run the forward pass),
so the same rules serve the full graph, the faithful dense mini-batches and the
neighbour-sampled subgraphs (:mod:`lagnh_pyg.training.sources`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data

from .. import losses as L
from ..config import Config
from ..graph import aux_similarity, dense_fused_weight
from ..nn import LAGNH, Discriminator


@dataclass
class Step:
    """What one training step needs.

    Args:
        forward: runs the model; returns at least ``z`` (n, k) and ``xhat`` (n, a) for the
            loss nodes (optionally ``logits`` (n, c) of Eq. 11, so the classifier runs once).
        x, aux, aux_unit: (n, d), (n, c), (n, c) of the loss nodes (the rows of ``z``).
        subsample_recon: the n x n reconstruction term (Eq. 9) uses ``loss.recon_nodes``
            random nodes when there are more (the release's batches use all of them).
        g_steps: generator updates of this step (None: ``train.g_steps``).
        split: optional ``(prepare, head)`` with ``forward() == head(prepare())``, where
            ``prepare`` draws no random numbers (the attention and the edge weights) and
            ``head`` does the rest (the GCN and its dropout): the step then runs ``prepare``
            once for its no-grad pass and its first generator pass (same numbers, one
            attention pass less; the parameters do not change in between).
        target_unit: (n, c') unit rows of the loss nodes whose S^d = max(0, t t^T) Eq. 9
            reconstructs with ``loss.reconstruct: Sd`` (the graph's ``target_unit``).
    """

    forward: Callable[[], dict[str, Tensor]]
    x: Tensor
    aux: Tensor
    aux_unit: Tensor
    subsample_recon: bool = True
    g_steps: int | None = None
    split: tuple[Callable[[], Any], Callable[[Any], dict[str, Tensor]]] | None = None
    target_unit: Tensor | None = None


class Trainer:
    """The model, the discriminator, their optimisers and the update rules.

    Args:
        cfg: a resolved :class:`~lagnh_pyg.config.Config`.
        feature_dim, aux_dim, bits: the problem's sizes.
        device: torch device.
    """

    def __init__(self, cfg: Config, feature_dim: int, aux_dim: int, bits: int, device: str = "cpu") -> None:
        self.cfg, self.bits, self.device = cfg, bits, torch.device(device)
        self.model = LAGNH.from_config(cfg, feature_dim, aux_dim, bits).to(self.device)
        self.disc = Discriminator(bits).to(self.device)
        # the generator side: attention, GCN, semantic classifier (and the recons-feat decoder)
        self.opt_g = torch.optim.Adam(self.model.parameters(), lr=cfg.train.lr)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.train.lr_d)
        self.epoch = 0

    # -- losses ---------------------------------------------------------------------------
    def _recon_target(self, kind: str, xhat: Tensor, aux_unit: Tensor, target_unit: Tensor | None = None) -> Tensor:
        """The graph Eq. 9 reconstructs, over the given nodes (detached)."""
        with torch.no_grad():
            if kind == "Sa":
                return aux_similarity(aux_unit, aux_unit)
            if kind == "Sd":
                if target_unit is None:
                    raise ValueError("loss.reconstruct=Sd needs the step's target_unit (the graph's)")
                return aux_similarity(target_unit, target_unit)
            weights = "visual" if kind == "Sv" else "fused"  # S (and ZZ, which reconstructs S)
            return dense_fused_weight(xhat, xhat, aux_unit, aux_unit, self.model.eta, self.model.sigma2, weights,
                                      same=True)

    def generator_losses(self, out: Mapping[str, Tensor], x: Tensor, aux: Tensor, aux_unit: Tensor,
                         rec_idx: Tensor | None, target_unit: Tensor | None = None) -> dict[str, Tensor]:
        """Eq. 8-12 on one forward pass; ``rec_idx`` selects the nodes of the n x n terms."""
        lc = self.cfg.loss
        z = out["z"]
        adv = L.adversarial_loss(self.disc(z))
        quant = L.quantization_loss(z)
        sel = slice(None) if rec_idx is None else rec_idx
        if lc.reconstruct == "feat":
            recon = L.feature_reconstruction_loss(self.model.decoder(z[sel]), self.model.prepare(x[sel]))
        else:
            target = self._recon_target(lc.reconstruct, out["xhat"][sel], aux_unit[sel],
                                        None if target_unit is None else target_unit[sel])
            fn = L.inner_product_reconstruction_loss if lc.reconstruct == "ZZ" else L.reconstruction_loss
            recon = fn(z[sel], target, lc.mu)
        logits = out["logits"] if "logits" in out else self.model.classify(z)
        sem = L.semantic_loss(logits, aux)
        total = L.generator_loss(adv, quant, recon, sem, lam=lc.lam, beta=lc.beta, alpha=lc.alpha, adv_weight=lc.adv)
        return {"loss_g": total, "adv": adv, "quant": quant, "recon": recon, "sem": sem}

    def discriminator_update(self, z: Tensor) -> float:
        """Eq. 10, discriminator side, on a detached Z and a fresh prior sample."""
        prior = torch.randn(z.shape, device=z.device, dtype=z.dtype)
        loss = L.discriminator_loss(self.disc(prior), self.disc(z.detach()))
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        return float(loss.detach())

    def _generator_update(self, step: Step, rec_idx: Tensor | None,
                          forward: Callable[[], dict[str, Tensor]] | None = None) -> dict[str, float]:
        out = (forward or step.forward)()
        # Eq. 10's generator side: gradients flow through D into Z, never into D's weights (so
        # that under DDP the discriminator's all-reduce hooks run on its own updates only)
        self.disc.requires_grad_(False)
        try:
            terms = self.generator_losses(out, step.x, step.aux, step.aux_unit, rec_idx, step.target_unit)
            self.opt_g.zero_grad(set_to_none=True)
            terms["loss_g"].backward()
        finally:
            self.disc.requires_grad_(True)
        self.opt_g.step()
        return {k: float(v.detach()) for k, v in terms.items()}

    # -- steps ------------------------------------------------------------------------------
    def step(self, step: Step) -> dict[str, float]:
        """One step: a discriminator update on the codes of a no-grad ``step.forward()``, then
        ``g_steps`` generator updates, each a full forward pass. Returns the loss terms."""
        self.model.train()
        first = None
        if step.split is not None:
            prepare, head = step.split
            g = prepare()  # with grad: the first generator pass reuses it
            first = lambda: head(g)  # noqa: E731
            with torch.no_grad():
                z = head(g)["z"]
        else:
            with torch.no_grad():
                z = step.forward()["z"]
        loss_d = self.discriminator_update(z)
        n = step.x.shape[0]
        terms: dict[str, float] = {}
        for i in range(self.cfg.train.g_steps if step.g_steps is None else step.g_steps):
            rec_idx = None
            if step.subsample_recon and n > self.cfg.loss.recon_nodes:
                rec_idx = torch.randperm(n, device=step.x.device)[: self.cfg.loss.recon_nodes]
            terms = self._generator_update(step, rec_idx, first if i == 0 else None)
        terms["loss_d"] = loss_d
        return terms

    def graph_step(self, graph: Data) -> dict[str, float]:
        """:meth:`step` on a whole graph (:func:`~lagnh_pyg.graph.build_graph`'s ``Data``)."""
        return self.step(graph_step_of(self.model, graph))

    def dense_step(self, x: Tensor, aux: Tensor) -> dict[str, float]:
        """:meth:`step` on one faithful mini-batch (dense in-batch graph, all nodes reconstructed)."""
        return self.step(dense_step_of(self.model, x, aux))

    # -- state ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Model, discriminator, optimisers and epoch (the RNG states: :func:`rng_state`)."""
        return {"epoch": self.epoch, "model": self.model.state_dict(), "disc": self.disc.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}

    def load_state(self, ck: Mapping[str, Any]) -> None:
        self.model.load_state_dict(ck["model"])
        self.disc.load_state_dict(ck["disc"])
        self.opt_g.load_state_dict(ck["opt_g"])
        self.opt_d.load_state_dict(ck["opt_d"])
        self.epoch = int(ck["epoch"])

    def non_finite_parameter(self) -> str | None:
        """The name of the first parameter or buffer holding a NaN or inf, else None."""
        for prefix, module in (("model.", self.model), ("disc.", self.disc)):
            for name, t in (*module.named_parameters(), *module.named_buffers()):
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    return prefix + name
        return None


def rng_state(device: torch.device) -> dict[str, Tensor]:
    """torch's global RNG states (dropout, the prior sample, the reconstruction subsample)."""
    rng = {"rng_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        rng["rng_cuda"] = torch.cuda.get_rng_state(device)
    return rng


def set_rng_state(state: Mapping[str, Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["rng_cpu"])
    if device.type == "cuda" and "rng_cuda" in state:
        torch.cuda.set_rng_state(state["rng_cuda"], device)


def graph_step_of(model: LAGNH, graph: Data) -> Step:
    """The step of a whole graph with ``x``, ``aux``, ``aux_unit``, ``edge_index`` (self-loops
    included) and ``s_a``: the plain sparse forward, whose degrees are the graph's own."""
    x, aux, ei, s_a = graph.x, graph.aux, graph.edge_index, graph.s_a
    return Step(lambda: model(x, aux, ei, s_a), x, aux, graph.aux_unit,
                split=(lambda: model.weighted_graph(x, aux, ei, s_a), model.codes),
                target_unit=getattr(graph, "target_unit", None))


def dense_step_of(model: LAGNH, x: Tensor, aux: Tensor) -> Step:
    """The release's step on one mini-batch: dense in-batch graph (Eq. 3-5 on all pairs); the
    reconstruction covers the whole batch, as released."""
    au = torch.nn.functional.normalize(aux, dim=1)
    return Step(lambda: model.forward_dense(x, aux), x, aux, au, subsample_recon=False)
