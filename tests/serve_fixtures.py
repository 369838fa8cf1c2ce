"""Small runs for the service tests: a synthetic one (no pictures) and a photo-folder one
whose dataset records its extraction recipe (so pictures can be uploaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (40, 70, 220)}
SHAPES = {"red": "circle", "green": "square", "blue": "triangle"}


def draw(colour: str, rng: np.random.Generator, size: int = 48):
    """A coloured shape on a textured background (a stand-in photo)."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8) // 4 + 150)
    d = ImageDraw.Draw(img)
    r = int(rng.integers(9, 16))
    cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
    box = (cx - r, cy - r, cx + r, cy + r)
    if SHAPES[colour] == "circle":
        d.ellipse(box, fill=COLOURS[colour])
    elif SHAPES[colour] == "square":
        d.rectangle(box, fill=COLOURS[colour])
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=COLOURS[colour])
    return img


def write_photos(folder: Path, n: int, seed: int = 3) -> list[str]:
    rng = np.random.default_rng(seed)
    rels = []
    for i in range(n):
        colour = list(COLOURS)[i % 3]
        rel = f"{'a' if i % 2 else 'b'}/{colour}_{i:03d}.png"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        draw(colour, rng).save(folder / rel)
        rels.append(rel)
    return rels


def synthetic_run(data_dir: Path, out: Path, bits: int = 16) -> Path:
    from lagnh_pyg.baselines import fit_run
    from lagnh_pyg.encoders import encode_splits
    from lagnh_pyg.retrieval import build_index
    from lagnh_pyg.rundir import Run

    fit_run("itq", data_dir, bits, out)
    encode_splits(Run.open(out), ["query", "database"])
    build_index(out)
    return out


def photo_run(root: Path, n: int = 30) -> Path:
    """photos/ -> random-weight ResNet-18 features (32 px: fast) + tags -> dataset -> ITQ 16 bits
    -> codes -> index; returns the run directory (root/run)."""
    from typer.testing import CliRunner

    from lagnh_pyg.cli.main import app

    runner = CliRunner()
    rels = write_photos(root / "photos", n)
    (root / "tags.csv").write_text("path,tags,labels\n" + "".join(
        f"{r},{r.split('/')[1].split('_')[0]};{SHAPES[r.split('/')[1].split('_')[0]]},{r.split('/')[1].split('_')[0]}\n"
        for r in rels))
    steps = [
        ["extract", "features", str(root / "photos"), "--backbone", "resnet18", "--weights", "none", "--image-size", "32",
         "--device", "cpu", "--workers", "0", "--out", str(root / "feats")],
        ["extract", "objects", str(root / "photos"), "--tags", str(root / "tags.csv"), "--out", str(root / "tags")],
        ["data", "import", "folder", str(root / "photos"), "--csv", str(root / "tags.csv"), "--features",
         str(root / "feats" / "features.npy"), "--aux", str(root / "tags" / "aux.npy"), "--n-train", str(n - 4),
         "--n-query", "3", "--out", str(root / "data")],
        ["baseline", "itq", str(root / "data"), "--bits", "16", "--out", str(root / "run")],
        ["encode", str(root / "run")],
        ["index", str(root / "run")],
    ]
    for s in steps:
        r = runner.invoke(app, s)
        assert r.exit_code == 0, (s, r.stdout, r.stderr)
    return root / "run"


# what every script sends: a Host the server answers for (it refuses others: DNS rebinding),
# and the header a write needs on a server without a token (it refuses writes without it)
LOCAL_URL, WRITE_HEADERS = "http://127.0.0.1:8000", {"X-Requested-With": "lagnh"}
