"""Training LAGNH: the per-step updates (Eq. 10-12), the epoch loops, checkpoints, resume.

Two modes (``train.mode``):

* ``full`` — every step sees all training nodes: one sparse PyG graph (FAISS kNN topology,
  fused weights recomputed each forward). :meth:`Trainer.graph_step` takes any subgraph
  ``Data`` batch with ``x``, ``aux``, ``aux_unit``, ``edge_index`` and ``s_a``, so a
  neighbour-sampled loader (``torch_geometric.loader.NodeLoader``) can feed it batches.
* ``faithful`` — the release: shuffled mini-batches of ``train.batch_size``, a dense graph
  built inside each batch, in-batch attention, row normalisation, sigma = 1.

Per step, as released: one discriminator update, then ``train.g_steps`` generator updates,
each a full forward pass; Adam for both.

A run directory holds ``checkpoint.pt`` (model, discriminator, both optimisers, epoch, RNG
states, resolved config; torch tensors and plain types only, loaded with
``weights_only=True``), ``encoder.safetensors`` (what out-of-sample encoding needs of the
training nodes), ``config.yaml``, ``log.jsonl`` (losses per epoch) and ``run.json``.

Example::

    from lagnh_pyg.train import train_run
    run_dir = train_run("data/syn", "configs/demo.yaml", bits=32, out_dir="runs/demo32")
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from . import losses as L
from .codes import check_bits
from .config import Config, load_config
from .errors import InputError
from .graph import build_graph, self_mass
from .nn import LAGNH, Discriminator
from .utils import atomic_path, sha256_file

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "lagnh-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_FILE = "checkpoint.pt"
ENCODER_FILE = "encoder.safetensors"
LOG_FILE = "log.jsonl"


# -- the trainer ----------------------------------------------------------------------------
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
    def _recon_target(self, kind: str, xhat: Tensor, aux_unit: Tensor) -> Tensor:
        """The graph Eq. 9 reconstructs, over the given nodes (detached)."""
        with torch.no_grad():
            s_a = (aux_unit @ aux_unit.T).clamp_min(0)
            if kind == "Sa":
                return s_a
            sq = xhat.pow(2).sum(1)
            d2 = (sq[:, None] + sq[None, :] - 2 * xhat @ xhat.T).clamp_min(0)
            d2.fill_diagonal_(0)
            s_v = torch.exp(-d2 / (2 * self.model.sigma2))
            if kind == "Sv":
                return s_v
            return s_v + self.model.eta * s_a  # S (and ZZ, which reconstructs S)

    def generator_losses(self, out: Mapping[str, Tensor], x: Tensor, aux: Tensor, aux_unit: Tensor,
                         rec_idx: Tensor | None) -> dict[str, Tensor]:
        """Eq. 8-12 on one forward pass; ``rec_idx`` selects the nodes of the n x n terms."""
        lc = self.cfg.loss
        z = out["z"]
        adv = L.adversarial_loss(self.disc(z))
        quant = L.quantization_loss(z)
        sel = slice(None) if rec_idx is None else rec_idx
        if lc.reconstruct == "feat":
            recon = L.feature_reconstruction_loss(self.model.decoder(z[sel]), self.model.prepare(x[sel]))
        else:
            target = self._recon_target(lc.reconstruct, out["xhat"][sel], aux_unit[sel])
            fn = L.inner_product_reconstruction_loss if lc.reconstruct == "ZZ" else L.reconstruction_loss
            recon = fn(z[sel], target, lc.mu)
        sem = L.semantic_loss(self.model.classify(z), aux)
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

    def _generator_update(self, forward: Callable[[], dict], x: Tensor, aux: Tensor, aux_unit: Tensor,
                          rec_idx: Tensor | None) -> dict[str, float]:
        out = forward()
        terms = self.generator_losses(out, x, aux, aux_unit, rec_idx)
        self.opt_g.zero_grad(set_to_none=True)
        terms["loss_g"].backward()
        self.opt_g.step()
        return {k: float(v.detach()) for k, v in terms.items()}

    # -- steps ------------------------------------------------------------------------------
    def graph_step(self, batch: Data) -> dict[str, float]:
        """One step on a (sub)graph: a discriminator update, then ``g_steps`` generator updates.

        ``batch`` holds ``x`` (n, d), ``aux`` (n, c), ``aux_unit`` (n, c), ``edge_index``
        (2, E) with one self-loop per node and ``s_a`` (E,): the whole training graph in the
        ``full`` mode, a sampled subgraph in a sampled mode.
        """
        self.model.train()
        x, aux, au = batch.x, batch.aux, batch.aux_unit
        ei, s_a = batch.edge_index, batch.s_a

        return self.adversarial_step(lambda: self.model(x, aux, ei, s_a), x, aux, au)

    def adversarial_step(self, forward: Callable[[], dict], x: Tensor, aux: Tensor, aux_unit: Tensor, *,
                         subsample_recon: bool = True) -> dict[str, float]:
        """The schedule of one step (as released): a discriminator update on the codes of a
        no-grad ``forward()``, then ``g_steps`` generator updates, each a full forward pass.

        ``x``, ``aux``, ``aux_unit`` are the nodes the losses cover (``forward()["z"]`` rows);
        with ``subsample_recon`` the n x n reconstruction term uses ``loss.recon_nodes`` random
        nodes when there are more.
        """
        with torch.no_grad():
            z = forward()["z"]
        loss_d = self.discriminator_update(z)
        n = x.shape[0]
        terms: dict[str, float] = {}
        for _ in range(self.cfg.train.g_steps):
            rec_idx = None
            if subsample_recon and n > self.cfg.loss.recon_nodes:
                rec_idx = torch.randperm(n, device=x.device)[: self.cfg.loss.recon_nodes]
            terms = self._generator_update(forward, x, aux, aux_unit, rec_idx)
        terms["loss_d"] = loss_d
        return terms

    def dense_step(self, x: Tensor, aux: Tensor) -> dict[str, float]:
        """The release's step on one mini-batch: dense in-batch graph (Eq. 3-5 on all pairs);
        the reconstruction covers the whole batch, as released."""
        self.model.train()
        au = torch.nn.functional.normalize(aux, dim=1)
        return self.adversarial_step(lambda: self.model.forward_dense(x, aux), x, aux, au, subsample_recon=False)

    def full_epoch(self, graph: Data) -> dict[str, float]:
        return self.graph_step(graph)

    def faithful_epoch(self, x: Tensor, aux: Tensor) -> dict[str, float]:
        n = x.shape[0]
        perm = torch.randperm(n)
        bs = self.cfg.train.batch_size
        sums: dict[str, float] = {}
        batches = 0
        for s in range(0, n, bs):
            idx = perm[s : s + bs].to(x.device)
            terms = self.dense_step(x[idx], aux[idx])
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            batches += 1
        return {k: v / batches for k, v in sums.items()}

    # -- state ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        rng = {"rng_cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return {"epoch": self.epoch, "model": self.model.state_dict(), "disc": self.disc.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), **rng}

    def load_state(self, ck: Mapping[str, Any]) -> None:
        self.model.load_state_dict(ck["model"])
        self.disc.load_state_dict(ck["disc"])
        self.opt_g.load_state_dict(ck["opt_g"])
        self.opt_d.load_state_dict(ck["opt_d"])
        self.epoch = int(ck["epoch"])
        torch.set_rng_state(ck["rng_cpu"])
        if self.device.type == "cuda" and "rng_cuda" in ck:
            torch.cuda.set_rng_state(ck["rng_cuda"], self.device)


# -- checkpoints ----------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike, trainer: Trainer, cfg: Config, *, meta: Mapping[str, Any]) -> None:
    """Write the checkpoint atomically (tensors and plain types only)."""
    ck = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config_yaml": cfg.to_yaml(),
          "config_digest": cfg.digest(), **dict(meta), **trainer.state()}
    with atomic_path(path) as tmp:
        torch.save(ck, tmp)


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; foreign, old or corrupt files raise
    InputError with one line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        # truncated zip, garbage bytes, pickled foreign objects (refused by weights_only) ...
        msg = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise InputError(f"checkpoint {path} is corrupt or not a lagnh checkpoint ({msg})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path} is not a lagnh checkpoint")
    if ck.get("version") != CHECKPOINT_VERSION:
        raise InputError(f"checkpoint {path} has version {ck.get('version')}; this lagnh-pyg reads {CHECKPOINT_VERSION}")
    return ck


def record_epoch(trainer: Trainer, cfg: Config, terms: Mapping[str, float], seconds: float, log, ckpt_path: Path,
                 meta: Mapping[str, Any], epochs: int, bar: "_Bar | None") -> None:
    """After an epoch: its JSONL log row, the periodic (intermediate) checkpoint, the bar."""
    row = {"epoch": trainer.epoch, **{k: round(v, 6) for k, v in terms.items()},
           "sigma2": float(trainer.model.sigma2), "seconds": round(seconds, 4)}
    log.write(json.dumps(row) + "\n")
    log.flush()
    every = cfg.train.checkpoint_every
    if every and trainer.epoch % every == 0 and trainer.epoch < epochs:
        save_checkpoint(ckpt_path, trainer, cfg, meta={**meta, "complete": False})
    if bar is not None:
        bar.update(terms)


def resume_checkpoint(out: Path, cfg: Config, bits: int, ds, map_location: str) -> dict[str, Any]:
    """The checkpoint ``--resume`` continues from, checked against this run's config, code
    length and dataset (one clear InputError line otherwise)."""
    ckpt_path = Path(out) / CHECKPOINT_FILE
    if not ckpt_path.is_file():
        raise InputError(f"--resume: {out} has no {CHECKPOINT_FILE}; start without --resume")
    ck = load_checkpoint(ckpt_path, map_location=map_location)
    if ck.get("config_digest") != cfg.digest():
        raise InputError(f"checkpoint {ckpt_path} was made with another config; resume with the same config "
                         "(only train.epochs may change) or train into a new --out")
    if int(ck.get("bits", -1)) != bits:
        raise InputError(f"checkpoint {ckpt_path} has {ck.get('bits')}-bit codes, not --bits {bits}")
    if ck.get("data_fingerprint") != ds.fingerprint:
        raise InputError(f"checkpoint {ckpt_path} was trained on another dataset than {ds.root}")
    return ck


def config_of_checkpoint(ck: Mapping[str, Any]) -> Config:
    import yaml

    return load_config(yaml.safe_load(ck["config_yaml"]))


# -- the run ----------------------------------------------------------------------------------
def _training_arrays(ds) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    idx = ds.split("train")
    X = ds.feature_rows(idx)
    A = ds.aux_rows(idx)
    labels = ds.label_rows(idx) if ds.has_labels else None
    return X, A, labels, idx


def _choose_anchors(aux: np.ndarray, m: int, seed: int) -> np.ndarray:
    """m training aux vectors (non-empty rows first), drawn with the run's seed; repeats
    only when the training set has fewer than m items."""
    rng = np.random.default_rng(seed)
    nonzero = np.flatnonzero(aux.sum(1) > 0)
    pool = nonzero if len(nonzero) else np.arange(len(aux))
    pick = rng.choice(pool, size=m, replace=len(pool) < m)
    return aux[np.sort(pick)]


def _read_log(path: Path, upto_epoch: int) -> list[str]:
    if not path.is_file():
        return []
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("epoch", 0) <= upto_epoch:
                keep.append(line)
        except json.JSONDecodeError:
            break
    return keep


def train_run(
    data_dir: str | os.PathLike,
    config: str | os.PathLike | Mapping[str, Any] | Config | None,
    bits: int,
    out_dir: str | os.PathLike,
    overrides: Iterable[str | tuple[str, Any]] = (),
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    distributed: bool = False,
) -> Path:
    """Train LAGNH on ``data_dir``'s training split; write a complete run directory.

    Args:
        data_dir: a dataset directory.
        config: a YAML path, a mapping, a Config, or None (defaults).
        bits: code length k (a positive multiple of 8).
        out_dir: the run directory (must not exist unless ``resume``).
        overrides: ``"key=value"`` strings or ``(key, value)`` pairs.
        resume: continue from ``out_dir/checkpoint.pt`` (same config except ``train.epochs``).
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        progress: show a progress bar with the loss terms.
        distributed: data-parallel training under ``torchrun`` (``train.mode: sampled`` only;
            see :func:`lagnh_pyg.sampled.sampled_train_run`).

    Returns:
        The run directory.
    """
    from .data.store import Dataset
    from .device import resolve_device
    from .run import write_run_meta
    from .utils import set_threads

    check_bits(bits)
    cfg = load_config(config, overrides)
    if cfg.train.mode == "sampled":  # neighbour-sampled seed batches: lagnh_pyg/sampled.py
        from .sampled import sampled_train_run

        return sampled_train_run(data_dir, cfg, bits, out_dir, resume=resume, device=device, progress=progress,
                                 distributed=distributed)
    if distributed:
        raise InputError("--distributed shards seed nodes across ranks: use it with --set train.mode=sampled")
    dev = resolve_device(device)
    out = Path(out_dir)
    ds = Dataset.open(data_dir)
    ckpt_path = out / CHECKPOINT_FILE
    ck = resume_checkpoint(out, cfg, bits, ds, dev) if resume else None
    if not resume and out.exists() and any(out.iterdir()):
        raise InputError(f"run directory {out} already exists; choose another --out, remove it, or pass --resume")
    out.mkdir(parents=True, exist_ok=True)
    if cfg.train.threads:
        set_threads(cfg.train.threads)

    X, A, labels, _train_idx = _training_arrays(ds)
    n = len(X)
    if cfg.encode.mode == "neighbours" and cfg.encode.k > n:
        raise InputError(f"encode.k={cfg.encode.k} exceeds the {n} training nodes; lower encode.k")
    torch.manual_seed(cfg.train.seed)
    trainer = Trainer(cfg, ds.feature_dim, ds.aux_dim, bits, dev)
    if cfg.model.attention == "anchors":
        trainer.model.attention.set_anchors(torch.from_numpy(_choose_anchors(A, cfg.model.anchors, cfg.train.seed)).to(dev))
    trainer.model.set_feature_stats(torch.from_numpy(X).to(dev))
    graph = None
    if cfg.train.mode == "full":
        t0 = time.perf_counter()
        graph = build_graph(X, A, cfg.graph.k, cfg.graph.sources, cfg.graph.index, labels).to(dev)
        st = graph.stats
        msg = (f"graph: {st['nodes']} nodes, {st['edges']} edges, degree mean {st['degree_mean']:.1f} "
               f"(min {st['degree_min']}, max {st['degree_max']}), built in {time.perf_counter() - t0:.1f}s")
        if "edges_sharing_label" in st:
            msg += f"; {100 * st['edges_sharing_label']:.1f}% of edges join items sharing a label (diagnostic only)"
        logger.info(msg)
    if ck is not None:
        trainer.load_state(ck)
        logger.info(f"resuming {out} from epoch {trainer.epoch}")
    meta = {"bits": bits, "feature_dim": ds.feature_dim, "aux_dim": ds.aux_dim, "data_fingerprint": ds.fingerprint,
            "n_train": n}
    log_path = out / LOG_FILE
    log_lines = _read_log(log_path, trainer.epoch) if resume else []
    with atomic_path(log_path) as tmp:
        tmp.write_text("".join(line + "\n" for line in log_lines))

    xt = torch.from_numpy(X).to(dev)
    at = torch.from_numpy(A).to(dev)
    epochs = cfg.train.epochs
    bar = _progress(progress, epochs, trainer.epoch)
    try:
        with open(log_path, "a") as log:
            while trainer.epoch < epochs:
                t0 = time.perf_counter()
                if graph is not None:
                    terms = trainer.full_epoch(graph)
                else:
                    terms = trainer.faithful_epoch(xt, at)
                trainer.epoch += 1
                record_epoch(trainer, cfg, terms, time.perf_counter() - t0, log, ckpt_path, meta, epochs, bar)
    finally:
        if bar is not None:
            bar.close()

    # the final model: calibrate sigma (Eq. 3, 'auto') on the final attentive features
    model = trainer.model.eval()
    cache = None
    if graph is not None:
        with torch.no_grad():
            xhat = model.attentive_features(graph.x, graph.aux)
            model.update_sigma2(xhat, graph.edge_index)
            fwd = model(graph.x, graph.aux, graph.edge_index, graph.s_a)
            sm = self_mass(fwd["edge_index"], fwd["edge_weight"], n)
        logger.info(f"final graph: sigma^2 {float(model.sigma2):.4g}, mean self-loop share of the normalised "
                    f"graph {sm:.3f} (1.0 would make the GCN a per-node MLP)")
        cache = {"xhat": fwd["xhat"], "z1": fwd["z1"], "degree": fwd["degree"], "aux_unit": graph.aux_unit}
    save_checkpoint(ckpt_path, trainer, cfg, meta={**meta, "complete": True})
    model_sha = sha256_file(ckpt_path)[:16]
    if cache is not None:
        _save_encoder_cache(out / ENCODER_FILE, cache, model_sha)
    with atomic_path(out / "config.yaml") as tmp:
        tmp.write_text(cfg.to_yaml())
    write_run_meta(out, method="lagnh", bits=bits, data=ds, model_file=CHECKPOINT_FILE, config=cfg.to_dict(),
                   extra={"n_train": n, "epochs_trained": trainer.epoch,
                          "graph": graph.stats if graph is not None else None})
    return out


def _save_encoder_cache(path: Path, cache: Mapping[str, Tensor], model_sha: str) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().float().cpu().contiguous() for k, v in cache.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"model_fingerprint": model_sha, "format": "lagnh-encoder-cache"})


class _Bar:
    """A rich progress bar whose description shows the loss terms."""

    def __init__(self, total: int, done: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.p = Progress(TextColumn("epoch"), MofNCompleteColumn(), BarColumn(), TimeRemainingColumn(),
                          TextColumn("{task.description}"), transient=False)
        self.p.start()
        self.task = self.p.add_task("", total=total, completed=done)

    def update(self, terms: Mapping[str, float]) -> None:
        desc = " ".join(f"{k} {terms[k]:.4f}" for k in ("loss_d", "adv", "quant", "recon", "sem") if k in terms)
        self.p.update(self.task, advance=1, description=desc)

    def close(self) -> None:
        self.p.stop()


def _progress(enabled: bool, total: int, done: int) -> _Bar | None:
    return _Bar(total, done) if enabled else None
