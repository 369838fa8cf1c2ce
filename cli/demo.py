"""`lagnh demo`: the main job on the built-in demo data (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import DeviceOpt, handle_errors, out


@handle_errors
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Where the report, runs and HTML page go.")] = Path("demo-out"),
    data: Annotated[Optional[Path], typer.Option(help="Run on this dataset directory instead of the built-in demo data.")] = None,
    bits: Annotated[str, typer.Option(help="Code lengths, comma-separated.")] = "16,32,64",
    methods: Annotated[str, typer.Option(help="Methods, comma-separated (LAGNH and baselines).")] = "lagnh,itq,lsh,pcah",
    device: DeviceOpt = "auto",
    faithful_bits: Annotated[int, typer.Option(help="Also train the authors' release (lagnh-faithful) at this code length; 0 skips it.")] = 32,
    jobs: Annotated[int, typer.Option(help="On the CPU: LAGNH runs trained at once, in separate processes sharing the cores "
                                           "(0: one per core, or per thread of `lagnh --threads N`; 1: one after the other). A second thread barely speeds up "
                                           "a run this small, a second run beside it nearly halves the wait.")] = 0,
) -> None:
    """Build (or reuse) the offline demo dataset, train LAGNH, fit baselines, evaluate, report.

    The demo data are real Fashion-MNIST images arranged in 2x2 mosaics (multi-label like
    MS COCO) with pretrained EfficientNet-Lite0 features; the auxiliary semantics come from an
    independent tile "detector". Prints the MAP@1000 table (protocol named) and where the
    P@K plots and the HTML page of example queries are.
    """
    from lagnh_pyg.demo.pipeline import run_demo
    from lagnh_pyg.device import resolve_device
    from lagnh_pyg.experiments.common import parse_list
    from lagnh_pyg.ownership import check_output_dir

    # before the data build and training: never in a run or a dataset, never the --data itself
    check_output_dir(out_dir, "--out", inputs=[data] if data is not None else [], may_hold_inputs=True)
    res = run_demo(out_dir, data_dir=data, methods=parse_list(methods, "methods"),
                   bits=parse_list(bits, "bits", int), device=resolve_device(device),
                   faithful_bits=faithful_bits or None, jobs=jobs,
                   log=lambda m: out.print(m))
    if not res.real_images:
        out.print("[bold yellow]These results are on SYNTHETIC data: Fashion-MNIST was not available.[/]")
    out.print()
    out.print(res.table_md)
    out.print("lagnh = this package's defaults (configs/demo.yaml); lagnh-faithful = the authors' release "
              "(train.mode=faithful); itq, lsh, pcah = shallow baselines on the same features.")
    out.print()
    out.print(f"report (markdown, CSV, JSON): {res.report_dir / 'accuracy.md'}")
    for name, p in res.files.items():
        if name.startswith("pk_"):
            out.print(f"P@K plot: {p}")
    if res.html is not None:
        out.print(f"example queries (open in a browser): {res.html}")
    out.print(f"runs: {res.report_dir / 'runs'}   total {res.seconds:.0f} s")
    if res.serve_run is not None:
        out.print(f"search it in a browser (then open http://127.0.0.1:8000/): lagnh serve {res.serve_run}",
                  markup=False, soft_wrap=True)
