"""Configuration of a LAGNH run: dataclasses, YAML files, ``--set key=value`` overrides.

A config has five sections and one switch::

    graph:   k, sources, index, eta, sigma, weights         (Eq. 3-5, the kNN topology)
    model:   attention, anchors, att_dim, hidden, dropout,
             normalization, feature_norm                    (Eq. 1-2, 6-7)
    loss:    lam, beta, alpha, mu, adv, reconstruct,
             recon_nodes                                    (Eq. 8-12)
    train:   mode, epochs, lr, lr_d, g_steps, batch_size,
             seed, checkpoint_every, threads
    encode:  mode, k, batch_size                            (Eq. 13, out-of-sample)
    variant: lagnh | no-aux | no-att | only-Sv | only-Sa |
             recons-ZZ | recons-feat | recons-S | recons-Sv | recons-Sa   (Table 5)

Resolution order: dataclass defaults < YAML file < ``--set`` overrides; then the variant and
``train.mode=faithful`` fix the fields they imply (see :data:`VARIANTS` and
:func:`resolve`). The resolved config is what a run directory records.

Example::

    cfg = load_config("configs/demo.yaml", overrides=["train.epochs=50", "graph.eta=2"])
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError

#: the YAML configs that come with the project (coco.yaml, nuswide.yaml, demo.yaml, baselines/)
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def shipped_config(name: str) -> Path:
    """``configs/<name>`` of the project (e.g. ``demo.yaml``, the default of ``lagnh demo`` and
    ``lagnh index-folder``)."""
    path = CONFIG_DIR / name
    if not path.is_file():
        raise InputError(f"{path} is missing; run this from a checkout of lagnh-pyg")
    return path


@dataclass
class GraphConfig:
    """The augmented semantic graph (Eq. 3-5) and its kNN topology."""

    k: int = 10  # neighbours per node in each kNN (visual, aux) before the union
    sources: str = "both"  # kNN topology from: visual | aux | both (union)
    index: str = "auto"  # FAISS index: auto (exact up to 200k nodes, IVF beyond) | flat | ivf
    eta: float = 1.0  # Eq. 5 fusion weight of S^a (release: 0 hard-coded, 10 as argument default)
    sigma: Any = "auto"  # Eq. 3 bandwidth: "auto" (sigma^2 = mean squared kNN-edge distance) or a number
    weights: str = "fused"  # edge weights: fused (S^v + eta S^a) | visual (only-Sv) | aux (only-Sa)


@dataclass
class ModelConfig:
    """Cross-modal attention (Eq. 1-2) and the GCN generator (Eq. 6-7)."""

    attention: str = "anchors"  # anchors | categories | batch (release) | none (no-att)
    anchors: int = 1024  # size of the fixed memory of training aux vectors (attention=anchors)
    self_key: bool = True  # add the item's own aux vector to the keys (batch-independent)
    att_norm: str = "l2"  # attention weights over keys: l2 (Eq. 2, as released) | l1 (convex mixture)
    att_dim: int = 512  # width of W_x, W_y
    hidden: int = 1024  # GCN hidden width h (COCO 1024, NUS-WIDE 2048)
    dropout: float = 0.5
    normalization: str = "gcn"  # gcn: D^-1/2 S D^-1/2 (Kipf) | row: D^-1 S (release)
    feature_norm: str = "standard"  # input features: standard (training mean/std) | l2 (unit rows) | none (raw, as released)


@dataclass
class LossConfig:
    """Weights of Eq. 12 and the reconstruction target of Eq. 9."""

    lam: float = 1.0  # quantisation, Eq. 8
    beta: float = 100.0  # reconstruction, Eq. 9
    alpha: float = 1.0  # semantic guidance, Eq. 11
    mu: float = 1.0  # scale of the reconstructed graph, Eq. 9
    adv: float = 1.0  # adversarial term, Eq. 10
    reconstruct: str = "Sa"  # Sa | S | Sv | ZZ | feat (Table 5)
    recon_nodes: int = 2048  # full mode: nodes sampled per step for the n x n terms of Eq. 9


@dataclass
class TrainConfig:
    mode: str = "full"  # full (all nodes every step) | faithful (the release's dense mini-batches) | sampled (neighbour-sampled seed batches, lagnh_pyg/training/sources.py)
    epochs: int = 300
    lr: float = 1e-4  # Adam, generator
    lr_d: float = 1e-4  # Adam, discriminator
    g_steps: int = 5  # generator updates per discriminator update
    batch_size: int = 1024  # faithful mode: dense mini-batch size
    seed: int = 0
    checkpoint_every: int = 10  # epochs between checkpoints (0: only at the end)
    threads: int = 0  # torch/FAISS threads (0: leave as is)
    # sampled mode: neighbours per node at each GCN hop (-1: all). [5, 3] against [10, 5]:
    # MAP@1000 0.910 vs 0.912 on the 5,000 demo nodes, 19k vs 48k nodes a 1,024-seed batch
    # at 200k nodes, 2.6x the seed nodes a second (docs/results/sampled.md)
    num_neighbors: list = field(default_factory=lambda: [5, 3])
    # sampled mode: seed nodes per mini-batch (the losses' nodes) and generator updates per
    # seed batch (one discriminator update each). A fresh subgraph per update already varies
    # what the generator sees; with 5 updates per batch a sampled epoch cost 4.5x a full-graph
    # epoch on 5,000 demo nodes, with 1 it costs 0.6x at equal MAP (docs/results/sampled.md).
    seed_batch_size: int = 1024
    sampled_g_steps: int = 1
    max_batches: int = 0  # sampled mode: cap an epoch at this many seed batches (0: a true epoch)


@dataclass
class EncodeConfig:
    mode: str = "neighbours"  # neighbours (link to k training nodes) | self (no edges) | faithful
    # no longer read: the neighbours encoding links a new item by the training graph's own
    # rule (graph.k visual + graph.k aux neighbours, lagnh_pyg/encode.py); kept so that
    # configs and checkpoints that set it still load
    k: int = 20
    batch_size: int = 256  # mode faithful: the release's encoding batch


@dataclass
class Config:
    graph: GraphConfig = field(default_factory=GraphConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    variant: str = "lagnh"

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


CHOICES: dict[str, tuple[str, ...]] = {
    "graph.sources": ("visual", "aux", "both"),
    "graph.index": ("auto", "flat", "ivf"),
    "graph.weights": ("fused", "visual", "aux"),
    "model.attention": ("anchors", "categories", "batch", "none"),
    "model.normalization": ("gcn", "row"),
    "model.feature_norm": ("standard", "l2", "none"),
    "model.att_norm": ("l2", "l1"),
    "loss.reconstruct": ("Sa", "S", "Sv", "ZZ", "feat"),
    "train.mode": ("full", "faithful", "sampled"),
    "encode.mode": ("neighbours", "self", "faithful"),
}

# Table 5 of the paper: each variant fixes these fields (applied after the YAML and --set).
VARIANTS: dict[str, dict[str, Any]] = {
    "lagnh": {},
    "recons-Sa": {},
    "no-aux": {
        "model.attention": "none", "model.self_key": False, "graph.sources": "visual",
        "graph.weights": "visual", "loss.reconstruct": "Sv", "loss.alpha": 0.0,
    },
    "no-att": {"model.attention": "none", "model.self_key": False},
    "only-Sv": {"graph.weights": "visual"},
    "only-Sa": {"graph.weights": "aux"},
    "recons-ZZ": {"loss.reconstruct": "ZZ"},
    "recons-feat": {"loss.reconstruct": "feat"},
    "recons-S": {"loss.reconstruct": "S"},
    "recons-Sv": {"loss.reconstruct": "Sv"},
}

# train.mode=faithful reproduces the release: in-batch attention, sigma = 1, row normalisation,
# raw features, dense per-batch graphs, batch-of-256 encoding.
FAITHFUL: dict[str, Any] = {
    "model.attention": "batch", "model.self_key": False, "model.att_norm": "l2", "graph.sigma": 1.0,
    "model.normalization": "row", "model.feature_norm": "none", "encode.mode": "faithful",
}

_POSITIVE_INT = {"train.seed_batch_size", "graph.k", "model.anchors", "model.att_dim", "model.hidden", "loss.recon_nodes",
                 "train.g_steps", "train.sampled_g_steps", "train.batch_size", "encode.k", "encode.batch_size"}
_NONNEG = {"train.max_batches", "graph.eta", "loss.lam", "loss.beta", "loss.alpha", "loss.mu", "loss.adv", "train.epochs",
           "train.checkpoint_every", "train.threads"}


def _sections(cfg: Config) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "variant"}


def valid_keys() -> list[str]:
    cfg = Config()
    keys = [f"{s}.{f.name}" for s, obj in _sections(cfg).items() for f in dataclasses.fields(obj)]
    return keys + ["variant"]


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check ``value`` against the type of the field's default; return it converted."""
    if key == "graph.sigma":
        if value == "auto":
            return "auto"
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise InputError(f"graph.sigma must be 'auto' or a positive number, got {value!r}")
        return float(value)
    if key == "train.num_neighbors":
        if not isinstance(value, list) or not value or any(
                isinstance(v, bool) or not isinstance(v, int) or v == 0 or v < -1 for v in value):
            raise InputError(f"train.num_neighbors must be a list with one positive count (or -1: all) per GCN hop, "
                             f"e.g. [10, 5]; got {value!r}")
        return list(value)
    if key == "variant":
        if value not in VARIANTS:
            raise InputError(f"variant must be one of {', '.join(VARIANTS)}, got {value!r}")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InputError(f"{key} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{key} must be an integer, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{key} must be a number, got {value!r}")
        value = float(value)
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise InputError(f"{key} must be a string, got {value!r}")
        if key in CHOICES and value not in CHOICES[key]:
            raise InputError(f"{key} must be one of {', '.join(CHOICES[key])}, got {value!r}")
    if key in _POSITIVE_INT and value <= 0:
        raise InputError(f"{key} must be positive, got {value}")
    if key in _NONNEG and value < 0:
        raise InputError(f"{key} must be non-negative, got {value}")
    if key in ("train.lr", "train.lr_d") and value <= 0:
        raise InputError(f"{key} must be positive, got {value}")
    if key == "model.dropout" and not 0 <= value < 1:
        raise InputError(f"model.dropout must lie in [0, 1), got {value}")
    return value


def set_value(cfg: Config, key: str, value: Any) -> None:
    """Set the dotted ``key`` (e.g. ``train.epochs``) on ``cfg`` with type checking."""
    if key == "variant":
        cfg.variant = _coerce(key, value, cfg.variant)
        return
    parts = key.split(".")
    sections = _sections(cfg)
    if len(parts) != 2 or parts[0] not in sections:
        raise InputError(f"unknown config key {key!r}; sections are {', '.join(sections)} (e.g. train.epochs)")
    sec = sections[parts[0]]
    names = [f.name for f in dataclasses.fields(sec)]
    if parts[1] not in names:
        raise InputError(f"unknown config key {key!r}; {parts[0]} has {', '.join(names)}")
    setattr(sec, parts[1], _coerce(key, value, getattr(type(sec)(), parts[1])))


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
    if "=" not in text:
        raise InputError(f"--set expects key=value (e.g. train.epochs=50), got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def resolve(cfg: Config) -> Config:
    """Apply the variant (Table 5) and the faithful mode's implied fields; validate the whole."""
    for key, value in VARIANTS[cfg.variant].items():
        set_value(cfg, key, value)
    if cfg.train.mode == "faithful":
        for key, value in FAITHFUL.items():
            set_value(cfg, key, value)
    if cfg.model.attention == "batch" and cfg.encode.mode == "neighbours":
        raise InputError(
            "model.attention=batch makes a code depend on its batch-mates; use encode.mode=faithful "
            "or attention anchors|categories"
        )
    return cfg


def load_config(
    source: str | os.PathLike | Mapping[str, Any] | Config | None = None,
    overrides: Iterable[str | tuple[str, Any]] = (),
) -> Config:
    """Load a YAML file (or a mapping / Config), apply ``key=value`` overrides, resolve."""
    if isinstance(source, Config):
        cfg = copy.deepcopy(source)
    elif source is None or isinstance(source, Mapping):
        cfg = from_dict(source or {})
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"config file {path} does not exist (see configs/*.yaml)")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise InputError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
        cfg = from_dict(data, where=str(path))
    for ov in overrides:
        key, value = parse_override(ov) if isinstance(ov, str) else ov
        set_value(cfg, key, value)
    return resolve(cfg)
