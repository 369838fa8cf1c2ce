"""The main job behind `make demo` / `lagnh demo`.

Real images end to end on a 2-core CPU in minutes: build (or reuse) the offline demo
dataset (real Fashion-MNIST items in 2x2 mosaics, pretrained EfficientNet-Lite0 features,
see :mod:`lagnh_pyg.demo.build`), train LAGNH with the ``demo`` config (configs/demo.yaml), fit the baselines,
encode, evaluate MAP@1000 under the authors' protocol, and write the P@K plots and an HTML
page of example queries. Without Fashion-MNIST it says so and runs on synthetic data.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..config import find_config, load_config
from ..errors import InputError

logger = logging.getLogger(__name__)

DEMO_METHODS = ("lagnh", "itq", "lsh", "pcah")
DEMO_BITS = (16, 32, 64)


@dataclass
class DemoResult:
    data_dir: Path
    real_images: bool
    report_dir: Path
    table_md: str
    html: Path | None
    files: dict = field(default_factory=dict)
    seconds: float = 0.0
    serve_run: Path | None = None  # the run `lagnh serve` is pointed at (indexed by example_queries_html)


def prepare_demo_data(out_dir: Path, data_dir: Path | None, device: str, log: Callable[[str], None]) -> tuple[Path, bool]:
    """The dataset the demo runs on: given, cached/built mosaics, or synthetic as a fallback."""
    if data_dir is not None:
        return Path(data_dir), True
    from .build import build_demo, default_cache_dir
    from .mosaics import DemoSpec

    target = default_cache_dir() / "dataset"
    try:
        summary = build_demo(DemoSpec(), target, device=device, log=log)
        if summary.get("cached"):
            log(f"demo data: reusing the cached build in {target}")
        return target, True
    except InputError as e:
        if "Fashion-MNIST" not in str(e) and "fashion" not in str(e).lower():
            raise
        log(f"NOTE: {e}")
        log("NOTE: running the demo on SYNTHETIC data instead (not real images).")
    from ..data.synthetic import SyntheticSpec, generate

    syn = out_dir / "synthetic-data"
    if not (syn / "manifest.json").is_file():
        generate(SyntheticSpec(n=26000, dim=1280, n_train=5000, n_query=1000), syn, overwrite=True)
    return syn, False


def example_queries_html(run_dir: Path, out_html: Path, n_queries: int = 8, k: int = 12, device: str = "cpu") -> Path:
    """An HTML page of ``n_queries`` query images (spread over the query split) and their top-k."""
    from ..files import atomic_path
    from ..report.contact_sheet import contact_sheets_html
    from ..retrieval import build_index, codes_dataset, search_run
    from ..rundir import Run

    run = Run.open(run_dir)
    build_index(run)
    ds = codes_dataset(run)
    q = ds.split("query")
    rows = q[np.linspace(0, len(q) - 1, num=min(n_queries, len(q))).astype(int)]
    sheets = []
    hits_rel = []
    for row in rows:
        res = search_run(run, item_id=ds.ids[row], k=k, device=device)
        results = [vars(h) for h in res.hits]
        hits_rel += [h.relevant for h in res.hits if h.relevant is not None]
        sheets.append(({"id": res.query_id, "path": res.query_path, "labels": res.query_labels}, results))
    meta = [f"run {run.root} · {run.method} · {run.bits} bits · Hamming ranking, ties by database order",
            "green = shares a label with the query, red = shares none (labels are used only for this display)"]
    if hits_rel:
        meta.append(f"precision over these {len(hits_rel)} results: {np.mean(hits_rel):.3f}")
    page = contact_sheets_html(sheets, title="lagnh-pyg demo: example queries", meta_lines=meta, image_root=ds.root)
    with atomic_path(out_html) as tmp:
        tmp.write_text(page)
    return out_html


def map_table(accuracy_json: Path, extra_cells: Sequence[dict] = ()) -> str:
    """methods x bits MAP table (markdown) from an accuracy report (plus ``extra_cells``,
    e.g. the faithful mode at one code length), the protocol in its header."""
    import json

    rep = json.loads(Path(accuracy_json).read_text())
    cells = [*rep["cells"], *extra_cells]
    prov = rep.get("provenance", {})
    methods = list(dict.fromkeys(c["method"] for c in cells))
    bits = sorted({c["bits"] for c in cells})
    by = {(c["method"], c["bits"]): c["map"] for c in cells}
    k = prov.get("topk", 1000)
    lines = [f"| MAP@{k} (protocol {prov.get('protocol', 'lagnh')}) | " + " | ".join(f"{b} bits" for b in bits) + " |",
             "|---|" + "---|" * len(bits)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(f"{by[(m, b)]:.4f}" if (m, b) in by else "-" for b in bits) + " |")
    return "\n".join(lines)


def run_demo(
    out_dir: str | os.PathLike = "demo-out",
    *,
    data_dir: str | os.PathLike | None = None,
    methods: Sequence[str] = DEMO_METHODS,
    bits: Sequence[int] = DEMO_BITS,
    device: str = "auto",
    overrides: Sequence[str] = (),
    faithful_bits: int | None = 32,
    log: Callable[[str], None] = logger.info,
    jobs: int = 1,
) -> DemoResult:
    """Run the demo; ``faithful_bits``: also train the authors' release (``lagnh-faithful``)
    at that code length, so the default is always reported next to it and ITQ.

    ``jobs``: on the CPU, train the LAGNH runs in this many processes at once, the cores
    shared among them (0: one per core, at most one per run). At the demo's 5,000 nodes a
    second thread does not speed a run up (8 epochs: 26.6-31.5 s with two threads, 29.8-32.6 s
    with one, on a 2-core machine), so two runs side by side take about the time of one.
    """
    from ..experiments.accuracy import run_accuracy
    from ..experiments.common import ExperimentSpec

    t0 = time.perf_counter()
    config = find_config("demo")
    load_config(config, overrides)  # a bad --set fails here, before the data build and training
    if jobs < 0:
        raise InputError(f"jobs must be 0 (one per core) or a positive count, got {jobs}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data, real = prepare_demo_data(out_dir, Path(data_dir) if data_dir else None, device, log)
    log(f"dataset: {data}")
    spec = ExperimentSpec(data_dir=data, out_dir=out_dir / "report", config=config, device=device,
                          overrides=tuple(overrides), progress=True)
    faithful = ("lagnh-faithful", int(faithful_bits), f"lagnh-faithful-{faithful_bits}bits-seed0") if faithful_bits else None
    lagnh_cells = []
    if "lagnh" in methods:  # the longest first: the authors' release takes ~1.5x a default run
        lagnh_cells = ([faithful] if faithful else []) + [("lagnh", int(b), f"lagnh-{int(b)}bits-seed0") for b in bits]
    if device == "cpu" and lagnh_cells:
        _fit_side_by_side(spec, lagnh_cells, jobs, log)  # run_accuracy then reuses the finished runs
    files = run_accuracy(spec, methods, bits)
    extra = []
    if faithful and "lagnh" in methods:
        from dataclasses import asdict

        from ..experiments.common import run_cell

        cell = run_cell(spec, *faithful[:2], 0, faithful[2])
        extra.append(asdict(cell))
    table = map_table(files["json"], extra)
    html = run_dir = None
    if "lagnh" in methods:
        run_dir = out_dir / "report" / "runs" / f"lagnh-{max(bits)}bits-seed0"
        html = example_queries_html(run_dir, out_dir / "examples.html")
    return DemoResult(data, real, out_dir / "report", table, html, files, time.perf_counter() - t0, run_dir)


def _fit_side_by_side(spec, cells: Sequence[tuple[str, int, str]], jobs: int,
                      log: Callable[[str], None]) -> None:
    """Fit, encode and evaluate the LAGNH ``cells`` (method, bits, run name) in ``jobs``
    processes at once (0: one per core), each with its share of the cores (of ``lagnh --threads
    N``'s N where given); nothing when that comes to one process. Finished runs are reused as by
    :func:`run_cell`."""
    import concurrent.futures as cf
    import multiprocessing

    from ..runtime import thread_budget, usable_cores

    cores = thread_budget() or usable_cores()
    workers = min(len(cells), jobs or cores)
    if workers <= 1:
        return
    threads = max(1, cores // workers)
    log(f"training {len(cells)} LAGNH runs in {workers} processes at once, {threads} thread(s) each")
    base = {"data_dir": spec.data_dir, "out_dir": spec.out_dir, "config": spec.config, "overrides": spec.overrides,
            "topk": spec.topk, "protocol": spec.protocol, "device": spec.device, "reuse": spec.reuse}
    with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_fit_cell, base, method, bits, name, threads) for method, bits, name in cells]
        try:
            for f in cf.as_completed(futures):
                f.result()  # the first failure, as raised in its process
        except BaseException:
            for f in futures:  # the runs not started yet; those running finish before the error shows
                f.cancel()
            raise


def _fit_cell(base: dict, method: str, bits: int, name: str, threads: int) -> None:
    """One cell in a worker process (spawned: a fresh interpreter), its log lines on stderr."""
    from ..experiments.common import ExperimentSpec, run_cell
    from ..runtime import set_threads

    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    logging.getLogger("faiss").setLevel(logging.WARNING)
    set_threads(threads)
    run_cell(ExperimentSpec(**base), method, bits, 0, name)
