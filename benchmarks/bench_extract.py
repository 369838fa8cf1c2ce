"""Extraction throughput (images/s) per backbone, and a check that EfficientNet-Lite0's weights load right.

Throughput: writes ``--n`` JPEG photos-sized images (``--size`` px, random content) to a
temporary folder and runs the whole `lagnh extract features` path on them (decoding workers,
resize + centre crop, forward pass, shards) for each backbone. Network weights do not change
the arithmetic, so the torchvision backbones are timed with random weights (no download);
EfficientNet-Lite0 uses its real offline weights. One warm-up batch is not timed. Optionally
times the Faster R-CNN detector the same way (``--detector``).

Weight check (``--knn``): kNN accuracy (k=10, cosine) of Fashion-MNIST test tiles against
training tiles in the pooled EfficientNet-Lite0 features, with the shipped ImageNet weights vs
random weights. Pretrained features must cluster the classes far better.

Threads: OpenMP's default spin-waiting collapses throughput on a shared, oversubscribed machine
(measured here: EfficientNet-Lite0 at 80 px, 2 threads, 38-46 images/s spinning vs 250-286
with OMP_WAIT_POLICY=PASSIVE or 1 thread), so this script sets OMP_WAIT_POLICY=PASSIVE unless
the environment already chooses (``--spin`` keeps the default).

Usage: python benchmarks/bench_extract.py [--threads 2] [--n 128] [--backbones efficientnet_lite0,resnet50,vgg16] [--knn] [--detector]
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's lagnh_pyg, not an installed copy


def throughput(backbones, n, size, batch, workers, device, detector):
    import numpy as np
    from PIL import Image

    from lagnh_pyg.extract.backbones import build_backbone
    from lagnh_pyg.extract.features import extract_features
    from lagnh_pyg.extract.images import list_image_source
    from lagnh_pyg.extract.objects import detect_objects

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "imgs"
        root.mkdir()
        rng = np.random.default_rng(0)
        for i in range(n):
            h, w = size, int(size * 4 / 3)
            Image.fromarray(rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)).save(root / f"{i:05d}.jpg", quality=90)
        imgs = list_image_source(root)
        warm = list_image_source(root)
        warm.ids, warm.paths = warm.ids[:batch], warm.paths[:batch]
        for name in backbones:
            weights = "imagenet" if name == "efficientnet_lite0" else "none"
            bb = build_backbone(name, weights)
            extract_features(warm, bb, Path(tmp) / f"warm-{name}", batch_size=batch, workers=0, device=device)
            t = time.perf_counter()
            res = extract_features(imgs, bb, Path(tmp) / f"out-{name}", batch_size=batch, workers=workers, device=device)
            dt = time.perf_counter() - t
            print(f"{name:20s} {bb.dim:5d}-d  {bb.image_size}px  weights={weights:8s}  {n / dt:7.1f} images/s "
                  f"({res.n_ok} images, batch {batch}, {workers} workers, {device})", flush=True)
        if detector:
            for det in ("fasterrcnn_mobilenet", "fasterrcnn"):
                m = max(4, n // 16)
                sub = list_image_source(root)
                sub.ids, sub.paths = sub.ids[:m], sub.paths[:m]
                t = time.perf_counter()
                res = detect_objects(sub, Path(tmp) / f"det-{det}", detector=det, weights="none", workers=workers,
                                     batch_size=2, device=device)
                dt = time.perf_counter() - t
                print(f"{det:20s} detector, random weights, min side 800: {m / dt:7.2f} images/s ({m} images, {device})",
                      flush=True)


def knn_check(n_train, n_test, image_size):
    import numpy as np
    import torch

    from lagnh_pyg.demo.fashion_mnist import load_fashion_mnist
    from lagnh_pyg.extract.backbones import build_backbone
    from lagnh_pyg.extract.features import embed

    tr_x, tr_y, te_x, te_y = load_fashion_mnist()
    rng = np.random.default_rng(0)
    a = rng.choice(len(tr_x), n_train, replace=False)
    b = rng.choice(len(te_x), n_test, replace=False)
    pix = np.concatenate([tr_x[a], te_x[b]])

    def feats(weights):
        bb = build_backbone("efficientnet_lite0", weights, image_size=image_size)
        mean = torch.tensor(bb.mean).view(1, 3, 1, 1)
        std = torch.tensor(bb.std).view(1, 3, 1, 1)

        def batches():
            for s in range(0, len(pix), 128):
                x = torch.from_numpy(pix[s : s + 128]).float().div(255)[:, None]
                x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
                yield s, (x.expand(-1, 3, -1, -1) - mean) / std

        return np.concatenate([f for _, f in embed(bb, batches())])

    def knn_acc(F, k=10):
        F = F / np.linalg.norm(F, axis=1, keepdims=True)
        S = F[n_train:] @ F[:n_train].T
        top = np.argsort(-S, axis=1)[:, :k]
        votes = np.apply_along_axis(lambda r: np.bincount(r, minlength=10), 1, tr_y[a][top])
        return float((votes.argmax(1) == te_y[b]).mean())

    imagenet_check()
    flat = pix.reshape(len(pix), -1).astype(np.float32) + 1e-3
    print(f"kNN (k=10, cosine) accuracy on {n_test} Fashion-MNIST test tiles vs {n_train} training tiles, "
          f"tiles resized to {image_size}px:")
    print(f"  raw pixels                          {knn_acc(flat):.3f}")
    for w in ("imagenet", "none"):
        t = time.perf_counter()
        acc = knn_acc(feats(w))
        print(f"  EfficientNet-Lite0 weights={w:8s}  {acc:.3f}   ({time.perf_counter() - t:.0f} s)", flush=True)


def imagenet_check():
    """Top-3 ImageNet classes of matplotlib's sample photo of Grace Hopper (a uniformed officer)."""
    import matplotlib
    import timm
    import torch
    from timm.data import ImageNetInfo

    from lagnh_pyg.extract.backbones import (
        build_backbone,
        efficientnet_lite0_weights_file,
        load_state_dict_in_order,
    )
    from lagnh_pyg.extract.images import read_image

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not photo.is_file():
        return
    transform = build_backbone("efficientnet_lite0", "none").transform()  # the extraction preprocessing
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    path = efficientnet_lite0_weights_file()
    load_state_dict_in_order(net, torch.load(path, map_location="cpu", weights_only=True), str(path))
    with torch.inference_mode():
        p = net.eval()(transform(read_image(str(photo)))[None]).softmax(1)[0]
    info = ImageNetInfo()
    names = ", ".join(f"{info.index_to_description(int(i)).split(',')[0]} {float(v):.2f}" for v, i in zip(*p.topk(3)))
    print(f"ImageNet top-3 of {photo.name} with the offline EfficientNet-Lite0 weights: {names}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=128, help="images timed per backbone")
    ap.add_argument("--size", type=int, default=240, help="height of the generated JPEGs (width 4/3 of it)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backbones", default="efficientnet_lite0,resnet50,vgg16")
    ap.add_argument("--detector", action="store_true", help="also time Faster R-CNN (random weights)")
    ap.add_argument("--knn", action="store_true", help="run the weight check")
    ap.add_argument("--knn-train", type=int, default=3000)
    ap.add_argument("--knn-test", type=int, default=1000)
    ap.add_argument("--knn-size", type=int, default=64)
    ap.add_argument("--spin", action="store_true", help="keep OpenMP's default spin-waiting")
    args = ap.parse_args()
    if not args.spin:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once, when torch loads OpenMP

    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    if args.backbones:
        throughput([b for b in args.backbones.split(",") if b], args.n, args.size, args.batch, args.workers,
                   args.device, args.detector)
    if args.knn:
        knn_check(args.knn_train, args.knn_test, args.knn_size)


if __name__ == "__main__":
    main()
