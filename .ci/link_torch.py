"""Hard-link torch's installed files from this venv into another venv, before pip runs there.

    .venv/bin/python .ci/link_torch.py DEST_VENV

torch's CUDA build and the CUDA libraries it pulls in (nvidia-*, cuda-*, triton) take about
6 GB in a venv, and CI builds three venvs (`make test`'s, `make test-min`'s and the wheel
check's): on a CI disk with under 10 GB free the second one failed with "No space left on
device". A hard link shares the file's blocks, so the second and third venvs cost a few MB
for torch. Each linked package keeps its own .dist-info (with its RECORD), so pip in
DEST_VENV sees torch as installed, resolves everything else there as usual and can uninstall
or replace it without touching the source venv (pip unlinks; it never writes into a file).

Only packages named torch, torchvision, triton, nvidia-* and cuda-* are linked; numpy and the
rest are left to pip (`make test-min` wants its own, older, numpy). Files outside
site-packages (console scripts, whose first line names the source venv's python) are not
linked. Where a hard link cannot be made (another file system, a file system without them)
nothing is left half-linked: the script says so and exits 0, and pip installs torch itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

HEAVY = re.compile(r"^(torch|torchvision|triton|nvidia-.+|cuda-.+)$")


def _name(dist: metadata.Distribution) -> str:
    return re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower()


def _site_packages(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        sys.exit(f"link_torch: {python} not found: make the venv first")
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def _files(dist: metadata.Distribution, base: Path) -> list[Path]:
    """The dist's files under base (site-packages), relative, its .dist-info last."""
    rel = []
    for f in dist.files or []:
        path = Path(os.path.normpath(dist.locate_file(f)))
        if base in path.parents and path.is_file():
            rel.append(path.relative_to(base))
    return sorted(rel, key=lambda p: (p.parts[0].endswith(".dist-info"), str(p)))


def link(dest_venv: Path, src_base: Path | None = None, dst_base: Path | None = None) -> int:
    """Link the heavy packages of ``src_base`` (default: the site-packages holding this python's
    torch) into ``dst_base`` (default: ``dest_venv``'s site-packages)."""
    if src_base is None:
        try:
            src_base = Path(os.path.normpath(metadata.distribution("torch").locate_file("")))
        except metadata.PackageNotFoundError:
            print(f"link_torch: no torch beside {sys.executable} to share; pip will install it")
            return 0
    if dst_base is None:
        dst_base = _site_packages(dest_venv)
    installed = {_name(d) for d in metadata.distributions(path=[str(dst_base)])}
    linked, size, names = 0, 0, []
    for dist in metadata.distributions(path=[str(src_base)]):
        name = _name(dist)
        if not HEAVY.match(name) or name in installed:
            continue
        made = []
        try:
            for rel in _files(dist, src_base):
                src, dst = src_base / rel, dst_base / rel
                if dst.exists():
                    continue
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.link(src, dst)
                made.append(dst)
                size += src.stat().st_size
        except OSError as err:  # EXDEV, EPERM, ...: undo this package, let pip install the rest
            for dst in made:
                dst.unlink(missing_ok=True)
            print(f"link_torch: cannot hard-link into {dst_base} ({err.strerror}); "
                  f"pip will install {name} and the packages after it itself")
            break
        linked += len(made)
        names.append(f"{name} {dist.version}")
        installed.add(name)
    if names:
        torch = next((n for n in names if n.startswith("torch ")), names[0])
        print(f"link_torch: {torch} and {len(names) - 1} more packages hard-linked from "
              f"{src_base.parent.parent.parent} into {dest_venv} ({linked} files, "
              f"{size / 2**30:.1f} GiB shared, not copied)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n\n")[1].strip())
    sys.exit(link(Path(sys.argv[1]).resolve()))
