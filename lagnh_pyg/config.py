"""Configuration of a LAGNH run: dataclasses whose fields carry their constraints
(:func:`param`, checked by :mod:`lagnh_pyg.params`, the mechanism the baselines' parameters
use too), YAML files, ``--set key=value`` overrides.

A config has five sections and one switch::

    graph:   k, sources, index, eta, sigma, weights,
             semantics, semantic_visual, semantic_ridge     (Eq. 3-5, the kNN topology)
    model:   attention, anchors, att_dim, hidden, dropout,
             normalization, feature_norm                    (Eq. 1-2, 6-7)
    loss:    lam, beta, alpha, mu, adv, reconstruct,
             diffusion, recon_nodes                         (Eq. 8-12)
    train:   mode, epochs, lr, lr_d, g_steps, batch_size,
             seed, checkpoint_every, threads
    encode:  mode, k, batch_size                            (Eq. 13, out-of-sample)
    variant: lagnh | no-aux | no-att | only-Sv | only-Sa |
             recons-ZZ | recons-feat | recons-S | recons-Sv | recons-Sa   (Table 5),
             raw-aux-graph | paper-graph   (this package's departures, switched off)

Resolution order: dataclass defaults < YAML file < ``--set`` overrides; then the variant and
``train.mode=faithful`` fix the fields they imply (see :data:`VARIANTS` and
:func:`resolve`). The resolved config is what a run directory records.

Example::

    cfg = load_config("demo", overrides=["train.epochs=50", "graph.eta=2"])   # or a YAML file's path
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError
from .params import (
    Boolean,
    Constraint,
    Integer,
    IntegerList,
    Options,
    Real,
    load_yaml,
    split_assignment,
)


def _config_dir() -> Path:
    here = Path(__file__).resolve().parent
    # installed: lagnh_pyg/configs (package data, pyproject.toml); a checkout: configs/ at its root
    return here / "configs" if (here / "configs").is_dir() else here.parent / "configs"


#: the YAML configs that come with lagnh-pyg: demo.yaml, coco.yaml, nuswide.yaml; baselines/NAME.yaml
CONFIG_DIR = _config_dir()
#: the kinds of shipped configs, and where each lives under CONFIG_DIR
CONFIG_KINDS = {"lagnh": ".", "baseline": "baselines"}


def shipped_configs(kind: str = "lagnh") -> list[str]:
    """The names of the configs that come with lagnh-pyg: LAGNH's (``coco``, ``demo``,
    ``nuswide``) or, with ``kind="baseline"``, the baselines' (``cibhash``, ``tbh``, ...)."""
    return sorted(p.stem for p in (CONFIG_DIR / CONFIG_KINDS[kind]).glob("*.yaml"))


def find_config(config: str | os.PathLike, kind: str = "lagnh") -> Path:
    """The YAML file of ``config``: a path to one, or the name of a shipped config (``demo``,
    ``coco``, ``nuswide``; with ``kind="baseline"`` a baseline's name, e.g. ``cibhash``), with or
    without ``.yaml``. An existing file wins over a name.

    Raises:
        InputError: neither a file nor a shipped config's name.
    """
    path = Path(config)
    if path.is_file():
        return path
    folder = CONFIG_DIR / CONFIG_KINDS[kind]
    if len(path.parts) == 1 and path.suffix in ("", ".yaml"):
        named = folder / f"{path.stem}.yaml"
        if named.is_file():
            return named
    names = ", ".join(shipped_configs(kind)) or "none installed"
    raise InputError(f"config {str(config)!r} is neither a YAML file nor the name of a shipped config ({names})")


def param(default: Any, check: Constraint) -> Any:
    """A config field with its constraint beside it (validated by :mod:`lagnh_pyg.params`)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"check": check})
    return field(default=default, metadata={"check": check})


POSITIVE_INT, NONNEG_INT, NONNEG = Integer(low=1), Integer(low=0), Real(low=0)

# Table 5 of the paper: each variant fixes these fields (applied after the YAML and --set).
VARIANTS: dict[str, dict[str, Any]] = {
    "lagnh": {},
    "recons-Sa": {"loss.reconstruct": "Sa"},
    "no-aux": {
        "model.attention": "none", "model.self_key": False, "graph.sources": "visual",
        "graph.weights": "visual", "loss.reconstruct": "Sv", "loss.alpha": 0.0, "graph.semantics": "raw",
    },
    "no-att": {"model.attention": "none", "model.self_key": False},
    "only-Sv": {"graph.weights": "visual"},
    "only-Sa": {"graph.weights": "aux"},
    "recons-ZZ": {"loss.reconstruct": "ZZ"},
    "recons-feat": {"loss.reconstruct": "feat"},
    "recons-S": {"loss.reconstruct": "S"},
    "recons-Sv": {"loss.reconstruct": "Sv"},
    # the denoised semantics (lagnh_pyg/training/semantics.py) switched off, one part at a time:
    # the aux kNN list on the raw aux; both the list and the target as the paper has them
    "raw-aux-graph": {"graph.semantics": "raw"},
    "paper-graph": {"graph.semantics": "raw", "loss.reconstruct": "Sa"},
    # the codes as the paper has them, sgn(z), without the rotation fitted after training
    "no-rotation": {"model.code_rotation": "none"},
}
#: the loss targets and graph options that need the denoised semantic map (fitted at training)
SEMANTIC_TARGETS = ("Sd",)


@dataclass
class GraphConfig:
    """The augmented semantic graph (Eq. 3-5) and its kNN topology."""

    k: int = param(10, POSITIVE_INT)  # neighbours per node in each kNN (visual, aux) before the union
    sources: str = param("both", Options("visual", "aux", "both"))  # kNN topology from: visual | aux | both (union)
    # FAISS index: auto (exact up to 200k nodes, IVF beyond) | flat | ivf
    index: str = param("auto", Options("auto", "flat", "ivf"))
    # Eq. 5 fusion weight of S^a (release: 0 hard-coded, 10 as argument default)
    eta: float = param(1.0, NONNEG)
    # Eq. 3 bandwidth: "auto" (sigma^2 = mean squared kNN-edge distance) or a number
    sigma: Any = param("auto", Real(positive=True, auto=True))
    # edge weights: fused (S^v + eta S^a) | visual (only-Sv) | aux (only-Sa)
    weights: str = param("fused", Options("fused", "visual", "aux"))
    # what the aux kNN list ranks by: raw (the aux rows, as the paper) | denoised (the aux
    # cleaned by what the features predict of it, lagnh_pyg/training/semantics.py). Topology
    # only: the edges' S^a weights stay the raw aux's (Eq. 4).
    semantics: str = param("raw", Options("raw", "denoised"))
    # denoised semantics s = l2n(w l2n(P(x)) + l2n(r * y)): w, the weight of the features'
    # ridge prediction P(x) of the aux; and the ridge penalty, as a fraction of the training size
    semantic_visual: float = param(0.5, NONNEG)
    semantic_ridge: float = param(0.01, Real(positive=True))


@dataclass
class ModelConfig:
    """Cross-modal attention (Eq. 1-2) and the GCN generator (Eq. 6-7)."""

    # anchors | categories | batch (release) | none (no-att)
    attention: str = param("anchors", Options("anchors", "categories", "batch", "none"))
    anchors: int = param(1024, POSITIVE_INT)  # size of the fixed memory of training aux vectors (attention=anchors)
    self_key: bool = param(True, Boolean())  # add the item's own aux vector to the keys (batch-independent)
    # attention weights over keys: l2 (Eq. 2, as released) | l1 (convex mixture)
    att_norm: str = param("l2", Options("l2", "l1"))
    att_dim: int = param(512, POSITIVE_INT)  # width of W_x, W_y
    hidden: int = param(1024, POSITIVE_INT)  # GCN hidden width h (COCO 1024, NUS-WIDE 2048)
    dropout: float = param(0.5, Real(low=0, high=1, high_open=True))
    # gcn: D^-1/2 S D^-1/2 (Kipf) | row: D^-1 S (release)
    normalization: str = param("gcn", Options("gcn", "row"))
    # input features: standard (training mean/std) | l2 (unit rows) | none (raw, as released)
    feature_norm: str = param("standard", Options("standard", "l2", "none"))
    # the codes: sgn(z) (the paper) | sgn(z R), R an orthogonal rotation fitted after training on
    # the training items' unit-length z by ITQ (Gong & Lazebnik): the quantisation loses less
    code_rotation: str = param("none", Options("none", "itq"))


@dataclass
class LossConfig:
    """Weights of Eq. 12 and the reconstruction target of Eq. 9."""

    lam: float = param(1.0, NONNEG)  # quantisation, Eq. 8
    beta: float = param(100.0, NONNEG)  # reconstruction, Eq. 9
    alpha: float = param(1.0, NONNEG)  # semantic guidance, Eq. 11
    mu: float = param(1.0, NONNEG)  # scale of the reconstructed graph, Eq. 9
    adv: float = param(1.0, NONNEG)  # adversarial term, Eq. 10
    # Sa | S | Sv | ZZ | feat (Table 5) | Sd (the denoised semantic graph: S^d_ij = max(0, t_i t_j),
    # t the denoised semantics after one diffusion step over the training graph)
    reconstruct: str = param("Sa", Options("Sa", "S", "Sv", "ZZ", "feat", "Sd"))
    # Sd: t = l2n(s_i + diffusion * l2n(sum of s_j over i's graph neighbours)) (0: no diffusion)
    diffusion: float = param(1.0, NONNEG)
    recon_nodes: int = param(2048, POSITIVE_INT)  # full mode: nodes sampled per step for the n x n terms of Eq. 9


@dataclass
class TrainConfig:
    # full (all nodes every step) | faithful (the release's dense mini-batches) | sampled
    # (neighbour-sampled seed batches, lagnh_pyg/training/sources.py)
    mode: str = param("full", Options("full", "faithful", "sampled"))
    epochs: int = param(300, NONNEG_INT)
    lr: float = param(1e-4, Real(positive=True))  # Adam, generator
    lr_d: float = param(1e-4, Real(positive=True))  # Adam, discriminator
    g_steps: int = param(5, POSITIVE_INT)  # generator updates per discriminator update
    batch_size: int = param(1024, POSITIVE_INT)  # faithful mode: dense mini-batch size
    seed: int = param(0, Integer())
    checkpoint_every: int = param(10, NONNEG_INT)  # epochs between checkpoints (0: only at the end)
    threads: int = param(0, NONNEG_INT)  # torch/FAISS threads (0: leave as is)
    # sampled mode: neighbours per node at each GCN hop (-1: all). [5, 3] against [10, 5]:
    # MAP@1000 0.910 vs 0.912 on the 5,000 demo nodes, 19k vs 48k nodes a 1,024-seed batch
    # at 200k nodes, 2.6x the seed nodes a second (docs/results/sampled.md)
    num_neighbors: list = param([5, 3], IntegerList("a list with one positive count (or -1: all) per GCN hop, "
                                                    "e.g. [10, 5]", special=(-1,)))
    # sampled mode: seed nodes per mini-batch (the losses' nodes) and generator updates per
    # seed batch (one discriminator update each). A fresh subgraph per update already varies
    # what the generator sees; with 5 updates per batch a sampled epoch cost 4.5x a full-graph
    # epoch on 5,000 demo nodes, with 1 it costs 0.6x at equal MAP (docs/results/sampled.md).
    seed_batch_size: int = param(1024, POSITIVE_INT)
    sampled_g_steps: int = param(1, POSITIVE_INT)
    # sampled mode: where a true epoch has so few seed batches that it would take fewer
    # generator updates than a full-graph epoch (train.g_steps), raise the updates per batch to
    # match (2,000 nodes: 2 batches of 1,024, 3 updates each). Below ~5,000 nodes the sampled
    # mode was undertrained without it: -0.0114 (2,000 demo nodes) and -0.0123 (4,000) MAP
    # against the full graph on the noisy tags, +0.0038 and -0.0045 with it (docs/guide/training.md)
    sampled_match_full: bool = param(True, Boolean())
    # sampled mode: scale each sampled neighbour message into a node by (its full in-degree
    # count - 1) / (its sampled in-edges), so that the GCN trains on neighbourhoods of the
    # full graph's weight (the encoder propagates over the full graph); false: the sum over
    # the sampled edges alone (before 2026-12-04). lagnh_pyg/training/sampled.py
    sampled_unbiased: bool = param(True, Boolean())
    max_batches: int = param(0, NONNEG_INT)  # sampled mode: cap an epoch at this many seed batches (0: a true epoch)


@dataclass
class EncodeConfig:
    mode: str = param("neighbours", Options("neighbours", "self", "faithful"))  # neighbours | self | faithful
    # no longer read: the neighbours encoding links a new item by the training graph's own
    # rule (graph.k visual + graph.k aux neighbours, lagnh_pyg/encode.py); kept so that
    # configs and checkpoints that set it still load
    k: int = param(20, POSITIVE_INT)
    batch_size: int = param(256, POSITIVE_INT)  # mode faithful: the release's encoding batch


@dataclass
class Config:
    graph: GraphConfig = field(default_factory=GraphConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    variant: str = param("lagnh", Options(*VARIANTS))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def digest(self, ignore: Iterable[str] = ("train.epochs", "train.checkpoint_every", "train.threads")) -> str:
        """A short hash of everything that shapes the model and its training (resume check)."""
        d = copy.deepcopy(self.to_dict())
        for key in ignore:
            sec, name = key.split(".")
            d[sec].pop(name, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# train.mode=faithful reproduces the release: in-batch attention, sigma = 1, row normalisation,
# raw features, dense per-batch graphs, batch-of-256 encoding.
FAITHFUL: dict[str, Any] = {
    "model.attention": "batch", "model.self_key": False, "model.att_norm": "l2", "graph.sigma": 1.0,
    "model.normalization": "row", "model.feature_norm": "none", "encode.mode": "faithful",
    "graph.semantics": "raw", "model.code_rotation": "none",
}


def _sections(cfg: Config) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "variant"}


def valid_keys() -> list[str]:
    cfg = Config()
    keys = [f"{s}.{f.name}" for s, obj in _sections(cfg).items() for f in dataclasses.fields(obj)]
    return keys + ["variant"]


def _constraint(owner: type, name: str) -> Constraint:
    return next(f.metadata["check"] for f in dataclasses.fields(owner) if f.name == name)


def set_value(cfg: Config, key: str, value: Any) -> None:
    """Set the dotted ``key`` (e.g. ``train.epochs``) on ``cfg``, checked against the constraint
    declared beside its field."""
    if key == "variant":
        cfg.variant = _constraint(Config, "variant").check(key, value)
        return
    parts = key.split(".")
    sections = _sections(cfg)
    if len(parts) != 2 or parts[0] not in sections:
        raise InputError(f"unknown config key {key!r}; sections are {', '.join(sections)} (e.g. train.epochs)")
    sec = sections[parts[0]]
    names = [f.name for f in dataclasses.fields(sec)]
    if parts[1] not in names:
        raise InputError(f"unknown config key {key!r}; {parts[0]} has {', '.join(names)}")
    setattr(sec, parts[1], _constraint(type(sec), parts[1]).check(key, value))


def get_value(cfg: Config, key: str) -> Any:
    if key == "variant":
        return cfg.variant
    sec, name = key.split(".")
    return getattr(getattr(cfg, sec), name)


def from_dict(d: Mapping[str, Any], where: str = "config") -> Config:
    """Build a Config from a nested mapping (unknown keys are errors)."""
    if d is None:
        d = {}
    if not isinstance(d, Mapping):
        raise InputError(f"{where} must be a mapping of sections (graph, model, loss, train, encode), got {type(d).__name__}")
    cfg = Config()
    for sec, body in d.items():
        if sec == "variant":
            set_value(cfg, "variant", body)
            continue
        if sec not in _sections(cfg):
            raise InputError(f"{where}: unknown section {sec!r}; sections are {', '.join(_sections(cfg))}, variant")
        if body is None:
            continue
        if not isinstance(body, Mapping):
            raise InputError(f"{where}: section {sec!r} must be a mapping, got {body!r}")
        for name, value in body.items():
            set_value(cfg, f"{sec}.{name}", value)
    return cfg


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.epochs=50"`` -> ``("train.epochs", 50)`` (the value is read as YAML)."""
    key, raw = split_assignment(text, "--set", "train.epochs=50")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, RecursionError):
        value = raw
    return key, value


def resolve(cfg: Config) -> Config:
    """Apply the variant (Table 5) and the faithful mode's implied fields; validate the whole."""
    for key, value in VARIANTS[cfg.variant].items():
        set_value(cfg, key, value)
    if cfg.train.mode == "faithful":
        for key, value in FAITHFUL.items():
            set_value(cfg, key, value)
        if cfg.loss.reconstruct == "Sd":  # the release reconstructs S^a
            set_value(cfg, "loss.reconstruct", "Sa")
    if cfg.model.attention == "batch" and cfg.encode.mode == "neighbours":
        raise InputError(
            "model.attention=batch makes a code depend on its batch-mates; use encode.mode=faithful "
            "or attention anchors|categories"
        )
    return cfg


#: keys that still load (old configs and runs set them) but that nothing reads any more: setting
#: one on purpose (``--set``, an override) warns instead of silently doing nothing
UNREAD = {
    "encode.k": "a new item is linked by graph.k visual and graph.k aux neighbours, the training "
                "graph's own rule; set graph.k at training time instead",
}


def uses_semantics(cfg: Config) -> bool:
    """Whether a run of ``cfg`` fits the denoised semantic map (and its model carries it)."""
    return cfg.graph.semantics == "denoised" or cfg.loss.reconstruct in SEMANTIC_TARGETS


def load_config(
    source: str | os.PathLike | Mapping[str, Any] | Config | None = None,
    overrides: Iterable[str | tuple[str, Any]] = (),
) -> Config:
    """Load a config (a YAML file, a shipped config's name such as ``demo``, a mapping or a
    Config), apply ``key=value`` overrides, resolve."""
    if isinstance(source, Config):
        cfg = copy.deepcopy(source)
    elif source is None or isinstance(source, Mapping):
        cfg = from_dict(source or {})
    else:
        path = find_config(source)
        cfg = from_dict(load_yaml(path, "config file"), where=str(path))
    for ov in overrides:
        key, value = parse_override(ov) if isinstance(ov, str) else ov
        set_value(cfg, key, value)
        if key in UNREAD:
            warnings.warn(f"{key} is no longer read and changes nothing: {UNREAD[key]}", UserWarning, stacklevel=2)
    return resolve(cfg)
