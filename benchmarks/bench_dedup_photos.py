"""Near-duplicate pictures found by `lagnh dedup`: pair precision and recall on real photos.

Photos that ship offline: scikit-image's sample images (``pip install scikit-image``; they
live in ``skimage/data``) and, when Debian's ``opencv-doc`` is installed, its example photos
(``/usr/share/doc/opencv-doc/examples/data``). Pictures that are themselves near-copies of
another sample (a stereo pair, a series, an edited copy) are left out. Each photo gets nine
variants: a crop, a mirror, JPEG at quality 30, a resize (half, brightened), a 10-degree
rotation, a blur, grey, a letterbox and a text overlay. The true pairs are the 45 pairs within
each photo's ten pictures; every other pair is a false one.

Each source is its own collection (``lagnh index-folder``: features, ImageNet-classifier aux,
LAGNH codes). The scikit-image collection chooses the radius and the cosine threshold (the
largest recall with precision >= .98 on the *groups*; ties: the stricter threshold, then the
smaller radius); the opencv-doc collection is then
measured with that choice, untouched by it. Precision and recall are given for the confirmed
pairs (what ``--out`` lists) and for the pairs the star groups put together.

    python benchmarks/bench_dedup_photos.py --work /tmp/dedup-photos
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SKIMAGE = ("astronaut", "brick", "camera", "cell", "chelsea", "clock_motion", "coffee", "coins", "color", "grass",
           "gravel", "horse", "hubble_deep_field", "ihc", "microaneurysms", "moon", "motorcycle_left", "page",
           "retina", "rocket", "text")
OPENCV_DIR = Path("/usr/share/doc/opencv-doc/examples/data")
# one picture of each series (left01..14, aero1/3, ...) and no edited copy (ela_modified)
OPENCV = ("HappyFish", "aero1", "aloeL", "apple", "baboon", "basketball1", "blox", "board", "box_in_scene",
          "building", "butterfly", "chicky_512", "ela_original", "fruits", "graf1", "home", "left01", "leuvenA",
          "messi5", "orange", "rubberwhale1", "smarties", "squirrel_cls", "starry_night", "stuff", "sudoku",
          "Blender_Suzanne1", "text_defocus", "lena", "pca_test1", "licenseplate_motion")
KINDS = ("crop", "mirror", "jpeg", "resize", "rotate", "blur", "grey", "letterbox", "text")


def skimage_photos() -> list[Path]:
    import skimage

    data = Path(skimage.__file__).parent / "data"
    out = []
    for name in SKIMAGE:
        hit = [p for p in data.glob(name + ".*") if p.suffix in (".png", ".jpg")]
        out += hit[:1]
    return out


def opencv_photos() -> list[Path]:
    if not OPENCV_DIR.is_dir():
        return []
    return [p for name in OPENCV for p in sorted(OPENCV_DIR.glob(name + ".*"))[:1]]


def variant(img, kind: str):
    """One edit of a PIL RGB picture."""
    from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

    w, h = img.size
    if kind == "crop":
        return img.crop((int(0.1 * w), int(0.1 * h), int(0.9 * w), int(0.9 * h)))
    if kind == "mirror":
        return ImageOps.mirror(img)
    if kind == "resize":
        return ImageEnhance.Brightness(img.resize((max(8, w // 2), max(8, h // 2)))).enhance(1.25)
    if kind == "rotate":
        return img.rotate(10, resample=Image.BICUBIC, expand=False)
    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(2))
    if kind == "grey":
        return ImageOps.grayscale(img).convert("RGB")
    if kind == "letterbox":
        side = max(w, h)
        box = Image.new("RGB", (side, side), (0, 0, 0))
        box.paste(img, ((side - w) // 2, (side - h) // 2))
        return box
    if kind == "text":
        out = img.copy()
        d = ImageDraw.Draw(out)
        size = max(12, h // 10)
        try:
            font = ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1
            font = ImageFont.load_default()
        d.text((w // 20, h - size - h // 20), "holiday 2024 (c)", fill=(255, 255, 255), font=font,
               stroke_width=2, stroke_fill=(0, 0, 0))
        return out
    raise ValueError(kind)


def build_folder(photos: list[Path], folder: Path) -> dict[str, str]:
    """Originals (max side 512) and their variants; returns {item id: photo name}."""
    import io

    from PIL import Image

    truth = {}
    folder.mkdir(parents=True, exist_ok=True)
    for p in photos:
        with Image.open(p) as im:
            img = im.convert("RGB")
        img.thumbnail((512, 512))
        name = p.stem
        img.save(folder / f"{name}__orig.png")
        truth[f"{name}__orig.png"] = name
        for kind in KINDS:
            v = variant(img, kind) if kind != "jpeg" else img
            fname = f"{name}__{kind}" + (".jpg" if kind == "jpeg" else ".png")
            if kind == "jpeg":
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=30)
                (folder / fname).write_bytes(buf.getvalue())
            else:
                v.save(folder / fname)
            truth[fname] = name
    return truth


def index_folder(folder: Path, run: Path, bits: int) -> float:
    t0 = time.perf_counter()
    if not (run / "index" / "meta.json").is_file():
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run([sys.executable, "-m", "lagnh_pyg", "index-folder", str(folder), "--out", str(run), "--bits",
                        str(bits), "--device", "cpu"], check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def candidates(run: Path, radius: int):
    """Every pair within ``radius`` of the collection: (ids, a, b, distance, cosine)."""
    from lagnh_pyg.collection import Collection
    from lagnh_pyg.dedup import pair_cosines, range_neighbours

    coll = Collection(run)
    codes, ids = coll.live_codes()
    a, b, d = [], [], []
    for s, lims, D, I in range_neighbours(codes, radius):
        q = np.repeat(np.arange(s, s + len(lims) - 1), np.diff(lims))
        up = I > q
        a.append(q[up])
        b.append(I[up])
        d.append(D[up])
    a, b, d = np.concatenate(a), np.concatenate(b), np.concatenate(d)
    cos, stored = pair_cosines(coll.live_features(ids), a, b)
    assert stored.all()
    return ids, a, b, d, cos


def scores(ids, truth, a, b, d, keep, grouping: str = "star") -> dict:
    """Pair precision and recall of the confirmed pairs and of the groups (star, or the
    connected components of the old `lagnh dedup`)."""
    from lagnh_pyg.dedup import component_groups, star_groups

    true_pairs = {frozenset((x, y)) for x, y in itertools.combinations(ids, 2) if truth[x] == truth[y]}
    confirmed = {frozenset((ids[x], ids[y])) for x, y in zip(a[keep], b[keep])}
    groups = (star_groups(len(ids), a[keep], b[keep], d[keep]) if grouping == "star"
              else component_groups(len(ids), a[keep], b[keep]))
    grouped = {frozenset((ids[x], ids[y])) for g in groups for x, y in itertools.combinations(g, 2)}

    def pr(found):
        tp = len(found & true_pairs)
        return {"precision": tp / len(found) if found else 1.0, "recall": tp / len(true_pairs), "pairs": len(found)}

    return {"confirmed": pr(confirmed), "groups": pr(grouped), "true_pairs": len(true_pairs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="folders and runs go here (reused when present)")
    ap.add_argument("--bits", type=int, default=32)
    ap.add_argument("--radii", default="2,4,6,8,10,12")
    ap.add_argument("--thresholds", default="0.70,0.75,0.80,0.82,0.84,0.86,0.88,0.90,0.92,0.94")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    radii = [int(r) for r in args.radii.split(",")]
    thresholds = [float(t) for t in args.thresholds.split(",")]
    out = {"bits": args.bits, "kinds": KINDS}
    sets = {"skimage": skimage_photos(), "opencv-doc": opencv_photos()}
    data = {}
    for name, photos in sets.items():
        if not photos:
            out[name] = "not installed"
            continue
        folder, run = args.work / name / "photos", args.work / name / "run"
        truth = build_folder(photos, folder) if not folder.is_dir() else json.loads((args.work / name / "truth.json").read_text())
        (args.work / name / "truth.json").write_text(json.dumps(truth))
        seconds = index_folder(folder, run, args.bits)
        ids, a, b, d, cos = candidates(run, max(radii))
        truth = {i: truth[Path(i).name] for i in ids}
        data[name] = (ids, truth, a, b, d, cos)
        same = np.array([truth[ids[x]] == truth[ids[y]] for x, y in zip(a, b)], bool)
        out[name] = {"photos": len(photos), "pictures": len(ids), "index_folder_s": round(seconds, 1),
                     "cosine_true_pairs_p5_p50": np.percentile(cos[same], [5, 50]).round(4).tolist() if same.any() else None,
                     "cosine_false_pairs_p50_p99_max": np.percentile(cos[~same], [50, 99, 100]).round(4).tolist()
                     if (~same).any() else None}
    ids, truth, a, b, d, cos = data["skimage"]
    grid = []
    for r, t in itertools.product(radii, thresholds):
        s = scores(ids, truth, a, b, d, (d <= r) & (cos >= t))
        grid.append({"radius": r, "min_cosine": t, **s})
    ok = [g for g in grid if g["groups"]["precision"] >= 0.98]
    # ties: the higher precision, then the stricter threshold (a margin), then the smaller radius
    best = max(ok or grid, key=lambda g: (g["groups"]["recall"], g["groups"]["precision"], g["min_cosine"],
                                          -g["radius"]))
    out["tuning_grid_skimage"] = grid
    out["chosen"] = {"radius": best["radius"], "min_cosine": best["min_cosine"]}
    out["no_confirmation"] = {}  # radius 2, every pair counted, connected components
    for name, (ids, truth, a, b, d, cos) in data.items():
        r, t = best["radius"], best["min_cosine"]
        out[name]["at_chosen"] = scores(ids, truth, a, b, d, (d <= r) & (cos >= t))
        out["no_confirmation"][name] = scores(ids, truth, a, b, d, d <= 2, "components")  # the old `dedup --radius 2`
    print(json.dumps({k: v for k, v in out.items() if k != "tuning_grid_skimage"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
