"""What the deep baselines share: a small torch network on frozen features, trained once.

Every deep method of the comparison (UH-BDNN, DeepBit, SSDH, SADH, TBH, CIBHash, Bi-half)
trains its image network on top of a pretrained backbone; at the feature level the dataset's
features play the part of that backbone's output (VGG16 fc7 in the papers), and only the
layers the method adds on top are trained here. A :class:`DeepBaseline` is a
:class:`~lagnh_pyg.baselines.base.HashingBaseline` (``fit`` / ``encode`` / ``save``), so
``lagnh encode``, ``evaluate``, ``index``, ``search`` and the experiments use it unchanged.

- **Codes**: ``sign(embed(x))`` of one item at a time (the network is in eval mode, no
  batch statistics), so one image always gets one code.
- **Determinism**: weights are initialised under ``torch.manual_seed(seed)`` and every random
  draw of training (shuffles, stochastic neurons, augmentation noise) comes from one CPU
  ``torch.Generator`` seeded with ``seed``, then moved to the device: same seed, same data,
  same device -> the same model.
- **Device**: ``device`` (``cpu`` or ``cuda[:N]``) is where training runs; encoding runs
  where the loader puts it (the CPU by default).
- **Persistence**: ``model.safetensors`` -- the network's tensors plus the method's fitted
  buffers, with method, bits, seed, config and fit diagnostics as JSON in the header (no
  pickle anywhere).
- **Augmented views** (methods with ``uses_views``): :class:`Views` draws them from the
  dataset's stored ``views`` (features of augmented renderings, see
  :mod:`lagnh_pyg.data.store`) or, when a dataset has none, from the feature-level fallback
  ``x * mask / (1 - p) + sigma * std * N(0, 1)`` (feature dropout with rate ``p`` plus
  Gaussian noise scaled by each dimension's training std). ``fit_info["augmentation"]``
  records which variant ran.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import InputError
from ..files import atomic_path
from .base import MODEL_FORMAT, HashingBaseline, Param, as_features

#: the feature-level augmentation used when a dataset has no stored views
VIEW_DROPOUT = Param("view_dropout", 0.2, "float", "fallback views: feature dropout rate", minimum=0)
VIEW_NOISE = Param("view_noise", 0.5, "float", "fallback views: noise, x each dimension's std", minimum=0)


#: subtract the training mean from the network's input (a stored buffer)
CENTRE = Param("centre", "yes", "choice", "subtract the training mean from the input", choices=("yes", "no"))


def epochs_param(default: int, why: str = "passes over the training split") -> Param:
    return Param("epochs", default, "int", why, minimum=1)


def lr_param(default: float) -> Param:
    return Param("lr", default, "float", "learning rate", positive=True)


def batch_param(default: int) -> Param:
    return Param("batch_size", default, "int", "items a gradient step", minimum=2)


def hidden_param(default: int, why: str = "hidden units (0: a linear layer on the features)") -> Param:
    return Param("hidden", default, "int", why, minimum=0)


def mlp(d: int, hidden: int, out: int, activation: str = "relu"):
    """``Linear(d, out)`` when ``hidden`` is 0, else ``Linear(d, hidden) -> act -> Linear(hidden, out)``."""
    import torch.nn as nn

    if hidden == 0:
        return nn.Sequential(nn.Linear(d, out))
    act = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}[activation]()
    return nn.Sequential(nn.Linear(d, hidden), act, nn.Linear(hidden, out))


def minibatches(n: int, batch_size: int, gen, drop_last: bool = False) -> Iterator:
    """Index tensors of one shuffled epoch (the permutation drawn from ``gen``)."""
    import torch

    perm = torch.randperm(n, generator=gen)
    stop = n - (n % batch_size) if drop_last and n >= batch_size else n
    for s in range(0, stop, batch_size):
        yield perm[s : s + batch_size]


class Views:
    """Augmented views of training items: stored ones, or the feature-level fallback.

    Args:
        X: (n, d) training features on the device.
        views: (n, K, d) features of K augmented renderings of the same items, or None.
        dropout, noise: the fallback's feature-dropout rate and noise scale (see module doc).
        gen: the CPU generator every draw comes from.

    ``pair(idx)`` returns two different views of each item: with stored views, two distinct
    entries of {the item's own features, its K views}; otherwise two independent fallback
    draws. ``one(idx)`` returns one such view.
    """

    def __init__(self, X, views, dropout: float, noise: float, gen) -> None:
        import torch

        self.X, self.gen = X, gen
        self.views = None
        if views is not None:
            v = torch.as_tensor(np.asarray(views), dtype=torch.float32)
            if v.ndim != 3 or v.shape[0] != X.shape[0] or v.shape[2] != X.shape[1]:
                raise InputError(f"views must have shape (n, K, d) = ({X.shape[0]}, K, {X.shape[1]}), got {tuple(v.shape)}")
            self.views = v.to(X.device)
        if dropout >= 1:
            raise InputError(f"view_dropout must be below 1, got {dropout}")
        self.dropout, self.noise = float(dropout), float(noise)
        self.std = X.std(dim=0, keepdim=True)

    @property
    def variant(self) -> str:
        return "views" if self.views is not None else "fallback"

    def describe(self) -> dict[str, Any]:
        if self.views is not None:
            return {"variant": "views", "stored_views": int(self.views.shape[1])}
        return {"variant": "fallback", "view_dropout": self.dropout, "view_noise": self.noise}

    def _rand(self, shape, kind: str = "normal"):
        import torch

        draw = torch.randn if kind == "normal" else torch.rand
        return draw(shape, generator=self.gen).to(self.X.device)

    def _fallback(self, idx):
        x = self.X[idx]
        if self.dropout > 0:
            keep = (self._rand(x.shape, "uniform") >= self.dropout).to(x.dtype)
            x = x * keep / (1.0 - self.dropout)
        return x + self.noise * self.std * self._rand(x.shape)

    def pair(self, idx):
        import torch

        if self.views is None:
            return self._fallback(idx), self._fallback(idx)
        pool = torch.cat([self.X[idx, None], self.views[idx]], dim=1)  # (B, K+1, d)
        k = pool.shape[1]
        a = torch.randint(k, (len(idx),), generator=self.gen)
        b = (a + torch.randint(1, k, (len(idx),), generator=self.gen)) % k  # never a itself
        rows = torch.arange(len(idx))
        return pool[rows, a.to(pool.device)], pool[rows, b.to(pool.device)]

    def one(self, idx):
        return self.pair(idx)[1]


class DeepBaseline(HashingBaseline):
    """Base class of the deep baselines (see the module docstring).

    Subclasses set ``name``, ``summary``, ``params`` and implement ``build(d)`` (the network,
    an ``nn.Module``), ``_train(X, views, gen)`` (the method's training on the device) and
    ``embed_tensor(X)`` (the real-valued embedding whose signs are the codes). Fitted tensors
    besides the network's go to ``self.buffers`` (name -> tensor), saved with the model.
    """

    uses_views: ClassVar[bool] = False
    model_suffix: ClassVar[str] = ".safetensors"  # the model file of its run: model.safetensors

    def __init__(self, bits: int, seed: int = 0, **params: Any) -> None:
        super().__init__(bits, seed, **params)
        self.device = "cpu"
        self.net = None
        self.buffers: dict[str, Any] = {}

    # -- what a method implements -------------------------------------------------------------
    def build(self, d: int):
        """The encoder network: by default d -> ``hidden`` (0: none) -> bits (see :func:`mlp`)."""
        return mlp(d, self.config["hidden"], self.bits)

    def _train(self, X, views: Views | None, gen) -> None:
        raise NotImplementedError

    def embed_tensor(self, X):
        raise NotImplementedError

    def run_epochs(self, opt, loss_fn, n: int, epochs: int, gen, drop_last: bool = True) -> list[float]:
        """The minibatch loop every method shares: ``epochs`` shuffled passes over ``n`` items
        in batches of ``batch_size``; ``loss_fn(idx, epoch)`` gives a batch's loss, which ``opt``
        minimises (``opt=None``: ``loss_fn`` steps itself and returns the loss to record).

        Returns each epoch's mean loss (also ``fit_info`` ``loss_first_epoch`` / ``loss_last_epoch``);
        a non-finite epoch loss stops the fit with a message.
        """
        losses = []
        for epoch in range(epochs):
            total, steps = 0.0, 0
            for idx in minibatches(n, self.config["batch_size"], gen, drop_last=drop_last):
                loss = loss_fn(idx, epoch)
                if opt is not None:
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                total, steps = total + loss.detach(), steps + 1
            losses.append(float(total) / max(1, steps))
            check_finite_loss(losses[-1], self.name, epoch)
        if losses:
            self.fit_info["loss_first_epoch"], self.fit_info["loss_last_epoch"] = losses[0], losses[-1]
        return losses

    def inputs(self, X):
        """What the network sees: ``X`` times the fitted input scale when the method has one
        (:meth:`input_scale`), minus the training mean when ``centre=yes``."""
        if "scale" in self.buffers:
            X = X * self.buffers["scale"]
        return X - self.buffers["mean"] if "mean" in self.buffers else X

    def input_scale(self, X: np.ndarray, features: np.ndarray) -> float | None:
        """The factor the transformed inputs ``X`` are multiplied by before the network, fitted
        on the training items (``features``: their raw features), or None: none (the default).
        A method whose loss depends on its input's scale overrides this (see :class:`TBH`)."""
        return None

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, features: Any, views: Any = None, aux: Any = None) -> DeepBaseline:
        """Train on ``features`` (n, d) and, when ``inputs`` uses it, their ``aux`` (n, c);
        ``views`` (n, K, d) are used by methods that take views. A stored view has features
        only: it is transformed with its item's aux (the same aux for each of its K views)."""
        import torch

        X = self.inputs_of(features, aux, "training features", fitting=True)
        if X.shape[0] < 4:
            raise InputError(f"{self.name} needs at least 4 training items, got {X.shape[0]}")
        if self.uses_views and views is not None and self.uses_aux:
            views = self.views_inputs(views, aux, len(X), int(np.shape(features)[1]))
        start = time.perf_counter()
        device = torch.device(self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.net = self.build(X.shape[1]).to(device)
        gen = torch.Generator().manual_seed(self.seed)
        Xt = torch.from_numpy(X).to(device)
        self.buffers = {}
        self.fit_info.pop("input_scale", None)  # a refit's own scale, or none
        scale = self.input_scale(X, features)
        if scale is not None:
            self.buffers["scale"] = torch.tensor(scale, dtype=torch.float32, device=device)
            self.fit_info["input_scale"] = round(float(scale), 6)
        if self.config.get("centre") == "yes":
            self.buffers["mean"] = self.inputs(Xt).mean(dim=0)
        aug = None
        if self.uses_views:
            aug = Views(Xt, views, self.config["view_dropout"], self.config["view_noise"], gen)
            self.fit_info["augmentation"] = aug.describe()
        self.net.train()
        self._train(Xt, aug, gen)
        self.net.eval()
        self.net.to("cpu")
        self.buffers = {k: v.detach().to("cpu") for k, v in self.buffers.items()}
        self.feature_dim = int(np.shape(features)[1])
        self.fit_info["fit_seconds"] = round(time.perf_counter() - start, 4)
        self.fit_info["train_items"] = int(X.shape[0])
        self.fit_info["device"] = str(device)
        return self

    def views_inputs(self, views: Any, aux: Any, n: int, d: int) -> np.ndarray:
        """(n, K, input_dim) transformed views: view k of item i with item i's aux."""
        V = np.asarray(views)
        if V.ndim != 3 or V.shape[0] != n or V.shape[2] != d:
            raise InputError(f"views must have shape (n, K, d) = ({n}, K, {d}), got {V.shape}")
        A = as_features(aux, "training aux")
        out = np.empty((n, V.shape[1], self.transform.dim(V.shape[2], A.shape[1])), dtype=np.float32)
        for k in range(V.shape[1]):
            out[:, k] = self.transform(as_features(V[:, k], "views"), A)
        return out

    # -- encoding -----------------------------------------------------------------------------
    def to(self, device: str) -> DeepBaseline:
        """Move the fitted network (for encoding) to ``device``."""
        self.device = device
        if self.net is not None:
            self.net.to(device)
            self.buffers = {k: v.to(device) for k, v in self.buffers.items()}
        return self

    def project(self, X: np.ndarray, chunk: int = 8192) -> np.ndarray:
        import torch

        dev = next(self.net.parameters()).device
        out = np.empty((len(X), self.bits), dtype=np.float32)
        with torch.no_grad():
            for s in range(0, len(X), chunk):
                out[s : s + chunk] = self.embed_tensor(torch.from_numpy(X[s : s + chunk]).to(dev)).float().cpu().numpy()
        return out

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the network and buffers as safetensors, metadata in the header (atomically)."""
        from safetensors.torch import save_file

        if self.feature_dim is None:
            raise InputError(f"{self.name} model is not fitted; nothing to save")
        tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        tensors.update({f"buffer.{k}": v.detach().cpu().contiguous() for k, v in self.buffers.items()})
        path = Path(path)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=self.saved_meta())
        return path

    @classmethod
    def _from_safetensors(cls, meta: dict[str, str], tensors: dict[str, Any], path: Path) -> DeepBaseline:
        model = cls.from_saved_meta(meta, path)
        model.net = model.build(model.input_dim)
        state = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
        try:
            model.net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise InputError(f"{path} does not hold a {cls.name} network of this shape: {str(e).splitlines()[0]}") from None
        model.net.eval()
        model.buffers = {k[7:]: v for k, v in tensors.items() if k.startswith("buffer.")}
        return model


def load_safetensors_model(path: Path, classes: dict[str, type]) -> DeepBaseline:
    """Read a deep baseline saved by :meth:`DeepBaseline.save` (safetensors: no pickle)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != MODEL_FORMAT:
            raise InputError(f"{path} is not a {MODEL_FORMAT} model file")
        cls = classes.get(meta.get("method", ""))
        if cls is None or not issubclass(cls, DeepBaseline):
            raise InputError(f"{path} holds an unknown deep baseline {meta.get('method')!r}")
        return cls._from_safetensors(meta, load_file(str(path)), path)
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"cannot read baseline model {path}: {e}") from None


def straight_through_sign(x):
    """``sign(x)`` forward (0 -> +1 never occurs with continuous inputs); identity gradient."""
    return x + (torch_sign(x) - x).detach()


def torch_sign(x):
    import torch

    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def cosine_matrix(a, b=None):
    """Pairwise cosine similarity of the rows of ``a`` (and ``b``)."""
    import torch.nn.functional as F

    an = F.normalize(a, dim=1, eps=1e-12)
    bn = an if b is None else F.normalize(b, dim=1, eps=1e-12)
    return an @ bn.T


def check_finite_loss(loss, method: str, step: int) -> None:
    if not math.isfinite(float(loss)):
        from ..errors import LagnhError

        raise LagnhError(f"{method} training diverged (loss {float(loss)} at step {step}); lower --set lr")
