"""`lagnh extract ...` (deep features, detections, tags) and `lagnh data demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from lagnh_pyg.errors import InputError

from .common import console, handle_errors, out

app = typer.Typer(no_args_is_help=True, help="Deep features and auxiliary semantics from images.")

ImagesArg = Annotated[Path, typer.Argument(help="A folder of images, a list file (one path a line) or a dataset directory with image paths.")]
DeviceOpt = Annotated[str, typer.Option(help="auto (a GPU when visible), cpu or cuda[:N].")]


class _Rate(ProgressColumn):
    """Images a second over the whole run so far."""

    def render(self, task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:.1f} img/s")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, transient=True)


@app.command("features")
@handle_errors
def features(
    images: ImagesArg,
    out_dir: Annotated[Path, typer.Option("--out", help="Extraction directory to create (features.npy, ids.txt, paths.txt, skipped.tsv).")],
    backbone: Annotated[str, typer.Option(help="vgg16 (fc7, the paper's), resnet50, efficientnet_lite0 (offline weights), or any torchvision/timm model name.")] = "vgg16",
    weights: Annotated[str, typer.Option(help="imagenet (pretrained), none (random) or a state-dict file.")] = "imagenet",
    image_size: Annotated[int | None, typer.Option(help="Input side in pixels (default: the backbone's, e.g. 224).")] = None,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int, typer.Option(help="Images a forward pass.")] = 32,
    workers: Annotated[int, typer.Option(help="Image-decoding worker processes (0: decode in the main process).")] = 2,
    shard_size: Annotated[int, typer.Option(help="Images a resumable shard.")] = 2048,
    dtype: Annotated[str, typer.Option(help="Storage dtype: float32 or float16.")] = "float32",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
    views: Annotated[int, typer.Option(help="Also extract K augmented views of each image (views.npy, float16; add them to a dataset with `lagnh data add-views`).")] = 0,
) -> None:
    """Extract one feature vector an image; resumable (rerun the same command after an interruption).

    Example: lagnh extract features photos/ --backbone efficientnet_lite0 --out feats/
    """
    from lagnh_pyg.device import resolve_device
    from lagnh_pyg.extract.backbones import build_backbone, check_weights_arg
    from lagnh_pyg.extract.features import check_out, extract_features
    from lagnh_pyg.extract.images import list_image_source

    imgs = list_image_source(images)
    check_out(out_dir, overwrite, imgs)  # before the backbone loads: a refused --out costs nothing
    dev = resolve_device(device)
    bb = build_backbone(backbone, check_weights_arg(weights), image_size=image_size)
    with _progress() as bar:
        task = bar.add_task(f"{bb.name} {bb.dim}-d", total=len(imgs))
        res = extract_features(imgs, bb, out_dir, device=dev, batch_size=batch_size, workers=workers,
                               shard_size=shard_size, dtype=dtype, overwrite=overwrite, views=views,
                               progress=lambda k: bar.advance(task, k))
    out.print(f"wrote {res.n_ok} x {bb.dim} features to {out_dir} ({res.images_per_s:.1f} images/s on {dev})")
    if views:
        out.print(f"wrote {views} augmented views an image to {out_dir / 'views.npy'}; next: lagnh data add-views DATA {out_dir} --out NEW_DATA")
    if res.n_skipped:
        out.print(f"skipped {res.n_skipped} unreadable image(s); listed in {out_dir / 'skipped.tsv'}")


@app.command("objects")
@handle_errors
def objects(
    images: ImagesArg,
    out_dir: Annotated[Path, typer.Option("--out", help="Extraction directory to create (aux, scores, names, ids).")],
    detector: Annotated[str, typer.Option(help="fasterrcnn (ResNet-50 FPN), fasterrcnn_v2 or fasterrcnn_mobilenet.")] = "fasterrcnn",
    threshold: Annotated[float, typer.Option(help="A category is present when a box of it scores at least this, in (0, 1).")] = 0.5,
    weights: Annotated[str, typer.Option(help="coco (pretrained on MS COCO) or none (random, for testing).")] = "coco",
    min_size: Annotated[int, typer.Option(help="Shorter image side the detector works at.")] = 800,
    tags: Annotated[Path | None, typer.Option(help="Build aux from a tag CSV (path,tags) instead of detecting objects.")] = None,
    min_tag_count: Annotated[int, typer.Option(help="With --tags: keep tags used by at least this many images.")] = 1,
    classifier: Annotated[str | None, typer.Option(help="Build aux from an offline ImageNet classifier's top-k classes instead (efficientnet_lite0: no tags, no download).")] = None,
    topk: Annotated[int, typer.Option(help="With --classifier: classes kept per image (sparse aux, their probabilities).")] = 5,
    image_size: Annotated[int | None, typer.Option(help="With --classifier: input side in pixels (default 224).")] = None,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int, typer.Option(help="Images a forward pass.")] = 4,
    workers: Annotated[int, typer.Option(help="Image-decoding worker processes.")] = 2,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
) -> None:
    """Auxiliary semantics: multi-hot of the 80 COCO categories detected (scores kept), of user tags,
    or the top-k classes of an offline ImageNet classifier.

    Example: lagnh extract objects photos/ --detector fasterrcnn --threshold 0.5 --out objs/
    Example: lagnh extract objects photos/ --classifier efficientnet_lite0 --topk 5 --out objs/
    """
    from lagnh_pyg.device import resolve_device
    from lagnh_pyg.extract.images import list_image_source
    from lagnh_pyg.extract.objects import check_threshold, detect_objects, tags_aux

    check_threshold(threshold)
    imgs = list_image_source(images)
    if classifier is not None:
        from lagnh_pyg.extract.classifier import check_topk, classify_images

        if tags is not None:
            raise InputError("give --tags or --classifier, not both")
        check_topk(topk)
        dev = resolve_device(device)
        with _progress() as bar:
            task = bar.add_task(f"{classifier} top-{topk}", total=len(imgs))
            res = classify_images(imgs, out_dir, classifier=classifier, topk=topk, image_size=image_size, device=dev,
                                  batch_size=max(batch_size, 16), workers=workers, overwrite=overwrite,
                                  progress=lambda k: bar.advance(task, k))
        out.print(f"wrote the top-{topk} ImageNet classes of {res['n_items']} images to {out_dir} "
                  f"({res['images_per_s']} images/s on {dev})")
        if res["n_skipped"]:
            out.print(f"skipped {res['n_skipped']} unreadable image(s); listed in {out_dir / 'skipped.tsv'}")
        return
    if tags is not None:
        res = tags_aux(imgs, tags, out_dir, min_count=min_tag_count, overwrite=overwrite)
        out.print(f"wrote tags of {res['n_items']} images to {out_dir}: {res['vocabulary']} tags used by >= "
                  f"{min_tag_count} images, {res['images_without_tags']} images without any")
        return
    dev = resolve_device(device)
    with _progress() as bar:
        task = bar.add_task(detector, total=len(imgs))
        res = detect_objects(imgs, out_dir, detector=detector, weights=weights, threshold=threshold, min_size=min_size,
                             device=dev, batch_size=batch_size, workers=workers, overwrite=overwrite,
                             progress=lambda k: bar.advance(task, k))
    out.print(f"wrote detections of {res['n_items']} images to {out_dir} ({res['mean_objects_per_image']:.2f} "
              f"categories an image at score >= {threshold}; {res['images_per_s']} images/s on {dev})")
    if res["n_skipped"]:
        out.print(f"skipped {res['n_skipped']} unreadable image(s); listed in {out_dir / 'skipped.tsv'}")


@handle_errors
def data_demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Dataset directory to create (reused when already built with the same options).")],
    aux: Annotated[str, typer.Option(help="detector (tile-classifier detections, COCO-like) or tags (noisy tags, NUS-WIDE-like).")] = "detector",
    n_train: Annotated[int, typer.Option(help="Training mosaics.")] = 5000,
    extra_train: Annotated[int, typer.Option(help="Training mosaics added without changing any other mosaic (same queries and database as without them): e.g. 45000 for 50,000 training mosaics.")] = 0,
    n_query: Annotated[int, typer.Option(help="Query mosaics (built from Fashion-MNIST test items only).")] = 1000,
    n_database: Annotated[int, typer.Option(help="Database mosaics.")] = 20000,
    train_in_database: Annotated[bool, typer.Option(help="Let the database hold the training mosaics too.")] = False,
    image_size: Annotated[int, typer.Option(help="Side the 56-px mosaics are resized to for EfficientNet-Lite0.")] = 80,
    detector_threshold: Annotated[float, typer.Option(help="Detector score threshold in (0, 1).")] = 0.5,
    detector_pool: Annotated[int, typer.Option(help="Fashion-MNIST training items reserved for the detector (in no mosaic).")] = 10000,
    seed: Annotated[int, typer.Option(help="Random seed of every choice.")] = 0,
    fashion_mnist_dir: Annotated[Path | None, typer.Option(help="Folder with the four Fashion-MNIST IDX files (default: the Debian package's, else download).")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Where features are cached (default ~/.cache/lagnh-pyg/demo, or $LAGNH_CACHE).")] = None,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int, typer.Option(help="Mosaics a forward pass.")] = 64,
    images: Annotated[bool, typer.Option(help="Write the mosaics as PNG files to DATA_DIR/images (thumbnails).")] = True,
    overwrite: Annotated[bool, typer.Option(help="Rebuild even if --out exists.")] = False,
    views: Annotated[int, typer.Option(help="Also store features of this many augmented renderings of each training mosaic (for cibhash/deepbit; 0: none).")] = 0,
) -> None:
    """The offline demo dataset: real Fashion-MNIST images in 2x2 mosaics (multi-label), EfficientNet-Lite0 features.

    Example: lagnh data demo --out data/demo; with 50,000 training mosaics and the same queries and
    database: lagnh data demo --extra-train 45000 --out data/demo50k
    """
    from lagnh_pyg.data.mosaic import DemoSpec, build_demo
    from lagnh_pyg.device import resolve_device

    spec = DemoSpec(n_train=n_train, extra_train=extra_train, n_query=n_query, n_database=n_database, train_in_database=train_in_database,
                    aux=aux, detector_threshold=detector_threshold, detector_pool=detector_pool, image_size=image_size,
                    seed=seed)
    spec.validate()
    dev = resolve_device(device)
    with _progress() as bar:
        task = bar.add_task("EfficientNet-Lite0 features", total=spec.n_mosaics)
        res = build_demo(spec, out_dir, fashion_mnist_dir=fashion_mnist_dir, cache_dir=cache_dir, device=dev,
                         batch_size=batch_size, write_images=images, overwrite=overwrite,
                         progress=lambda k: bar.advance(task, k), log=lambda m: bar.console.print(m), views=views)
    if res["cached"]:
        out.print(f"demo dataset {out_dir} is already built with these options (cached); nothing to do")
        return
    t = res["timings"]
    out.print(f"wrote demo dataset {out_dir}: {res['n_items']} mosaics, {res['feature_dim']}-d features, "
              f"{res['aux_dim']} aux columns ({aux}), {res['mean_labels_per_mosaic']:.2f} labels a mosaic; "
              f"{t['total_s']:.0f} s (features {t['features_s']:.0f} s)")
