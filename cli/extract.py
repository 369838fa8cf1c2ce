"""`lagnh extract ...`: deep features and auxiliary semantics (detections, tags, classes) from images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lagnh_pyg.errors import InputError

from .common import DeviceOpt, handle_errors, image_progress, out

app = typer.Typer(no_args_is_help=True, help="Deep features and auxiliary semantics from images.")

ImagesArg = Annotated[Path, typer.Argument(help="A folder of images, a list file (one path a line) or a dataset directory with image paths.")]


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
    with image_progress() as bar:
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
        with image_progress() as bar:
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
    with image_progress() as bar:
        task = bar.add_task(detector, total=len(imgs))
        res = detect_objects(imgs, out_dir, detector=detector, weights=weights, threshold=threshold, min_size=min_size,
                             device=dev, batch_size=batch_size, workers=workers, overwrite=overwrite,
                             progress=lambda k: bar.advance(task, k))
    out.print(f"wrote detections of {res['n_items']} images to {out_dir} ({res['mean_objects_per_image']:.2f} "
              f"categories an image at score >= {threshold}; {res['images_per_s']} images/s on {dev})")
    if res["n_skipped"]:
        out.print(f"skipped {res['n_skipped']} unreadable image(s); listed in {out_dir / 'skipped.tsv'}")
