"""The provenance block every report carries: software versions, the machine a number was
measured on, and the caller's fields; as a dict (JSON) or a markdown section.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any


# -- provenance ------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """The machine a number was measured on (CPU count, model, GPU when torch sees one)."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "processor": _cpu_model(),
    }
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover - psutil is a dependency
        pass
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover
        pass
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def software_versions() -> dict[str, str]:
    """Versions of the packages that decide results, for reports and manifests."""
    import platform
    import sys
    from importlib import metadata

    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    # distribution metadata, so that recording versions never imports torch or faiss
    for dist in ("numpy", "torch", "torch-geometric", "faiss-cpu", "faiss-gpu", "scipy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    from ..version import __version__

    versions["lagnh_pyg"] = __version__
    return versions


def provenance(**extra: Any) -> dict[str, Any]:
    """The block every report records: software versions, machine, and the caller's fields."""
    return {**extra, "software": software_versions(), "machine": machine_info()}


def provenance_markdown(prov: Mapping[str, Any]) -> str:
    """A "how this was measured" section for a markdown report."""
    lines = ["## Provenance", ""]
    for k, v in prov.items():
        if isinstance(v, Mapping):
            lines.append(f"- **{k}**: " + ", ".join(f"{a}={b}" for a, b in v.items()))
        else:
            lines.append(f"- **{k}**: {v}")
    return "\n".join(lines) + "\n"
