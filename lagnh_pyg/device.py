"""Device choice at run time (never a hard-coded cuda:1)."""

from __future__ import annotations

from .errors import InputError


def resolve_device(name: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; validates explicit names."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {name} asked for, but no CUDA GPU is visible")
        return name
    raise InputError(f"unknown device {name!r}; use auto, cpu or cuda[:N]")


def faiss_has_gpu() -> bool:
    """True when the installed FAISS is a GPU build with at least one GPU."""
    try:
        import faiss

        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:
        return False
