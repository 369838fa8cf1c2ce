"""`lagnh index-folder`: a folder of pictures to a served index in one resumable command
(:mod:`lagnh_pyg.index_folder`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import DeviceOpt, handle_errors, say


@handle_errors
def index_folder(
    photos: Annotated[Path, typer.Argument(help="A folder of pictures (searched recursively).")],
    out_dir: Annotated[Path, typer.Option("--out", help="The run directory to make (served by `lagnh serve`).")],
    work: Annotated[Path | None, typer.Option(help="Where features, aux and the dataset go (default: RUN_DIR.work next to it).")] = None,
    tags: Annotated[Path | None, typer.Option(help="A tag CSV (path,tags[,labels]) as aux instead of the classifier.")] = None,
    topk: Annotated[int, typer.Option(help="ImageNet classes kept per picture as aux (without --tags).")] = 5,
    backbone: Annotated[str, typer.Option(help="Feature backbone (efficientnet_lite0 works offline).")] = "efficientnet_lite0",
    image_size: Annotated[int | None, typer.Option(help="Input side for the backbone and classifier (default 224).")] = None,
    method: Annotated[str, typer.Option(help="lagnh, or a baseline: itq, lsh, pcah, sh, sklsh, sgh.")] = "lagnh",
    bits: Annotated[int, typer.Option(help="Code length.")] = 32,
    config: Annotated[str | None, typer.Option(metavar="NAME|FILE", help="LAGNH config: a shipped config's name or a YAML file (default: demo).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="LAGNH config override key=value (repeatable).")] = None,
    device: DeviceOpt = "auto",
    workers: Annotated[int, typer.Option(help="Image-decoding worker processes.")] = 2,
    overwrite: Annotated[bool, typer.Option(help="Replace a --out run made from other pictures or options (and the items added to it).")] = False,
) -> None:
    """Folder of pictures -> served index: extract -> import -> train -> encode -> index.

    Resumable: run the same command again after an interruption. A stage made from other
    pictures or options is done again (the run in --out only with --overwrite).
    Then: lagnh serve RUN_DIR.

    Example: lagnh index-folder photos/ --out runs/photos
    """
    import logging

    from lagnh_pyg.device import resolve_device
    from lagnh_pyg.index_folder import index_folder as run

    root = logging.getLogger()
    level = root.level
    if not root.isEnabledFor(logging.DEBUG):  # the stages' log lines would break the progress line (-v: shown)
        root.setLevel(logging.WARNING)
    try:
        with Pipeline() as display:
            run(photos, out_dir, work=work, tags=tags, topk=topk, backbone=backbone, image_size=image_size,
                method=method, bits=bits, config=config, overrides=set_ or (), device=resolve_device(device),
                workers=workers, say=say, progress=display, overwrite=overwrite)
    finally:
        root.setLevel(level)
    say(f"next: lagnh serve {out_dir}")


class Pipeline:
    """One progress line for the whole command on stderr, 80 columns at most:
    ``[4/7] train   ━━━━━━━━━━━━━━━━━━━━━━━━━━━━   12/40 0:00:05``: the display protocol of
    :func:`lagnh_pyg.index_folder.index_folder` (stages) and of the training loop (epochs)."""

    def __init__(self, console=None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        from .common import console as stderr

        self.bar = Progress(TextColumn("{task.description:<16}"), BarColumn(bar_width=28), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=console or stderr, transient=True, expand=False)
        self.task = None

    def __enter__(self) -> "Pipeline":
        self.bar.start()
        self.task = self.bar.add_task("", total=None)
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def begin(self, stage: str, step: int, steps: int, total: int | None) -> None:
        self.bar.reset(self.task, total=total, description=f"[{step}/{steps}] {stage}")

    def advance(self, n: int = 1) -> None:
        self.bar.advance(self.task, n)

    def start(self, total: int, done: int) -> None:  # training: epochs
        self.bar.update(self.task, total=total, completed=done)

    def update(self, terms) -> None:
        self.advance(1)

    def close(self) -> None:
        pass
