"""What every experiment shares: fitting one method into a run directory, encoding and
evaluating it, reusing finished runs, and writing a report that records its provenance.

One *cell* = one (method, bits, seed, config overrides) run: fitted on the training split
(LAGNH through :func:`lagnh_pyg.training.train_run`, baselines through
:func:`lagnh_pyg.baselines.fit_run`), encoded with :func:`lagnh_pyg.rundir.encode_splits`,
evaluated with :func:`lagnh_pyg.retrieval.evaluate_run`. Runs live under
``REPORT_DIR/runs/<name>``; a run whose ``cell.json`` matches the requested cell is reused, so
an interrupted experiment continues where it stopped.

Model selection never looks at the query set: experiments report every configuration they
run and choose none of them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import find_config, load_config
from ..data.store import Dataset
from ..errors import InputError
from ..files import write_json_atomic, write_text
from ..metrics import PROTOCOL_DESCRIPTIONS, check_protocol
from ..ownership import remove_owned
from ..report.provenance import provenance, provenance_markdown
from ..report.tables import markdown_table, write_csv
from ..rundir import CELL_FILE, CHECKPOINT_FILE, LOG_FILE, RUN_FORMAT, RunPaths

logger = logging.getLogger(__name__)

LAGNH = "lagnh"
# what marks a directory as an experiment's own (possibly unfinished) run, safe to start over
RUN_MARKERS = (CELL_FILE, CHECKPOINT_FILE, LOG_FILE)
#: LAGNH under other settings, usable as method names (e.g. --methods lagnh,lagnh-faithful,itq):
#: ``lagnh-faithful`` trains and encodes as the authors' release does.
LAGNH_MODES: dict[str, tuple[str, ...]] = {LAGNH: (), "lagnh-faithful": ("train.mode=faithful",)}


def is_lagnh(method: str) -> bool:
    return method in LAGNH_MODES


def known_methods() -> list[str]:
    """``lagnh`` and the registered baselines (when the baselines package is installed)."""
    names = list(LAGNH_MODES)
    try:
        from ..baselines import BASELINES

        names += list(BASELINES)
    except ModuleNotFoundError as e:  # baselines not built yet
        if not (e.name or "").startswith("lagnh_pyg.baselines"):
            raise
    return names


def parse_list(value: str | Sequence[Any], what: str, kind: type = str) -> list:
    """``"a,b,c"`` (or a sequence) -> a list of ``kind``; empty entries refused."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out = []
    for it in items:
        it = it.strip() if isinstance(it, str) else it
        if it == "":
            raise InputError(f"{what}: empty entry in {value!r}")
        try:
            out.append(kind(it))
        except (TypeError, ValueError):
            raise InputError(f"{what}: {it!r} is not a valid {kind.__name__}") from None
        if kind is float and not np.isfinite(out[-1]):
            raise InputError(f"{what}: {it!r} is not a finite number")
    if not out:
        raise InputError(f"{what}: give at least one value")
    return out


def all_methods() -> list[str]:
    """``--methods all``: the paper's Table 3 (LAGNH, six shallow and five deep baselines) plus
    the two modern rows (cibhash, bihalf)."""
    from ..baselines import DEEP, SHALLOW

    return [LAGNH, *(c.name for c in SHALLOW), *(c.name for c in DEEP)]


def check_methods(methods: Sequence[str]) -> list[str]:
    known = known_methods()
    methods = [m.lower() for m in methods]
    if "all" in methods:
        methods = [x for m in methods for x in (all_methods() if m == "all" else [m])]
    bad = [m for m in methods if m not in known]
    if bad:
        raise InputError(f"unknown method(s) {', '.join(bad)}; known: {', '.join(known)}")
    if len(set(methods)) != len(methods):
        raise InputError(f"a method is listed twice in {', '.join(methods)}")
    return methods


@dataclass
class ExperimentSpec:
    """The settings every cell of one experiment shares.

    Args:
        data_dir: the dataset directory (must have labels: evaluation needs them).
        out_dir: the report directory; runs go to ``out_dir/runs``.
        config: LAGNH config (YAML path, mapping or None = defaults); ignored by baselines.
        overrides: LAGNH ``key=value`` overrides applied to every LAGNH cell.
        topk / protocol: the MAP@K and its protocol.
        seeds: one run per seed; tables show the mean (and the spread when > 1 seed).
        device: ``auto``, ``cpu`` or ``cuda``: LAGNH training and encoding, deep baselines' training.
        reuse: reuse finished runs whose ``cell.json`` matches.
        progress: show LAGNH's progress bar.
    """

    data_dir: Path
    out_dir: Path
    config: Any = None
    overrides: tuple[str, ...] = ()
    topk: int | None = 1000
    protocol: str = "lagnh"
    seeds: tuple[int, ...] = (0,)
    device: str = "auto"
    reuse: bool = True
    progress: bool = False

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.out_dir = Path(self.out_dir)
        self.overrides = tuple(self.overrides)
        self.seeds = tuple(int(s) for s in self.seeds)
        check_protocol(self.protocol)
        ds = Dataset.open(self.data_dir)
        ds.require_labels("an experiment's evaluation")
        self.dataset = ds
        if not self.seeds:
            raise InputError("give at least one seed")
        if self.config is not None and not isinstance(self.config, Mapping):
            self.config = find_config(self.config)  # a path, or a shipped config's name (demo, coco, ...)
        load_config(self.config, self.overrides)  # a bad --set fails before the first cell
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def record(self) -> dict[str, Any]:
        """The provenance block of a report on this spec."""
        ds = self.dataset
        return provenance(
            dataset=str(ds.root.resolve()),
            data_fingerprint=ds.fingerprint,
            split_sizes={s: len(ds.split(s)) for s in ("train", "query", "database")},
            protocol=self.protocol,
            protocol_description=PROTOCOL_DESCRIPTIONS[self.protocol],
            topk="all" if self.topk is None else self.topk,
            tie_rule="Hamming distance, ties by database order",
            seeds=list(self.seeds),
            lagnh_config=str(self.config) if self.config is not None and not isinstance(self.config, Mapping) else self.config,
            lagnh_overrides=list(self.overrides),
            device=self.device,
            model_selection="none: every configuration run is reported; the query set never chooses one",
        )


@dataclass
class Cell:
    """One run of an experiment and what it measured."""

    method: str
    bits: int
    seed: int
    name: str
    overrides: tuple[str, ...] = ()
    run_dir: str = ""
    map: float = float("nan")
    pk_cutoffs: list[int] = field(default_factory=list)
    pk: list[float] = field(default_factory=list)
    train_seconds: float = float("nan")
    encode_seconds: float = float("nan")
    n_encoded: int = 0
    reused: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def key(self) -> dict[str, Any]:
        return {"method": self.method, "bits": self.bits, "seed": self.seed, "overrides": list(self.overrides)}


def _cell_spec(spec: ExperimentSpec, cell: Cell) -> dict[str, Any]:
    """What must match for a finished run to be reused."""
    from ..files import sha256_file

    conf = spec.config
    if conf is not None and not isinstance(conf, Mapping):
        conf = {"file": str(Path(conf).resolve()), "sha256": sha256_file(conf)[:16]}
    if not is_lagnh(cell.method):
        from ..baselines import load_params

        conf = load_params(cell.method)[0] or None  # configs/baselines/<method>.yaml: edits refit
    return {**cell.key(), "data_fingerprint": spec.dataset.fingerprint,
            "config": conf,
            "base_overrides": list(spec.overrides) if is_lagnh(cell.method) else []}


def fit_method(method: str, spec: ExperimentSpec, bits: int, run_dir: Path, seed: int,
               overrides: Iterable[str] = (), resume: bool = False) -> Path:
    """Fit ``method`` on the training split into ``run_dir`` (LAGNH or a baseline).

    ``overrides`` are LAGNH config overrides, or a baseline's ``key=value`` parameters (over its
    ``configs/baselines/<method>.yaml``; e.g. ``inputs=both``)."""
    if is_lagnh(method):
        from ..training import train_run

        ov = [*spec.overrides, *LAGNH_MODES[method], f"train.seed={seed}", *overrides]
        return train_run(spec.data_dir, spec.config, bits, run_dir, overrides=ov, resume=resume,
                         device=spec.device, progress=spec.progress)
    from ..baselines import fit_run
    from ..device import resolve_device
    from ..params import split_assignments

    params = split_assignments(overrides, "a baseline parameter", "inputs=both")  # e.g. inputs=both, aux_weight=0.5
    return fit_run(method, spec.data_dir, bits, run_dir, seed=seed, device=resolve_device(spec.device), **params)


def encode_cell(spec: ExperimentSpec, run_dir: Path, cell: Cell) -> Cell:
    """Encode the query and database splits with the run's model; time it."""
    from ..device import resolve_device
    from ..encoders import encode_splits
    from ..rundir import Run

    run = Run.open(run_dir)
    t0 = time.perf_counter()
    encode_splits(run, ["query", "database"], device=resolve_device(spec.device) if run.method == LAGNH else "cpu")  # run.json says "lagnh" for every mode
    cell.encode_seconds = time.perf_counter() - t0
    ds = spec.dataset
    cell.n_encoded = int(len(ds.split("query")) + len(ds.split("database")))
    return cell


def evaluate_cell(spec: ExperimentSpec, run_dir: Path, cell: Cell) -> Cell:
    """MAP@K under the spec's protocol and the P@K curve of the run's codes."""
    from ..retrieval import evaluate_run

    ev = evaluate_run(run_dir, spec.topk, spec.protocol, plots=False)
    cell.map = float(ev.result.map)
    cell.pk_cutoffs = [int(k) for k in ev.result.pk_cutoffs]
    cell.pk = [float(v) for v in ev.result.pk]
    cell.extra["evaluation"] = _evaluation(spec)
    return cell


def encode_and_evaluate(spec: ExperimentSpec, run_dir: Path, cell: Cell) -> Cell:
    return evaluate_cell(spec, run_dir, encode_cell(spec, run_dir, cell))


def _evaluation(spec: ExperimentSpec) -> dict[str, Any]:
    return {"protocol": spec.protocol, "topk": "all" if spec.topk is None else spec.topk}


def run_cell(spec: ExperimentSpec, method: str, bits: int, seed: int, name: str,
             overrides: Sequence[str] = ()) -> Cell:
    """Fit (or reuse), encode and evaluate one cell; its record is kept in ``cell.json``.

    A finished run with the same fit settings is reused; when only the evaluation settings
    (protocol, K) changed, its codes are evaluated again without refitting.
    """
    cell = Cell(method, int(bits), int(seed), name, tuple(overrides))
    run_dir = spec.out_dir / "runs" / name
    cell.run_dir = str(run_dir)
    want = _cell_spec(spec, cell)
    cell_file = RunPaths(run_dir).cell_path
    if spec.reuse and cell_file.is_file():
        try:
            old = json.loads(cell_file.read_text())
        except json.JSONDecodeError:
            old = {}
        if old.get("spec") == want and "result" in old:
            res = old["result"]
            done = Cell(**{**res, "overrides": tuple(res.get("overrides", ())), "reused": True})
            if done.extra.get("evaluation") != _evaluation(spec):
                logger.info("[%s] reusing the fitted run %s; evaluating it again", name, run_dir)
                evaluate_cell(spec, run_dir, done)
                write_json_atomic(cell_file, {"spec": want, "result": {**asdict(done), "reused": False}})
            else:
                logger.info("[%s] reusing finished run %s", name, run_dir)
            return done
    # an unfinished or different run in our own report directory (nothing else is deleted)
    remove_owned(run_dir, (RUN_FORMAT,), markers=RUN_MARKERS)
    t0 = time.perf_counter()
    fit_method(method, spec, bits, run_dir, seed, overrides)
    cell.train_seconds = time.perf_counter() - t0
    encode_and_evaluate(spec, run_dir, cell)
    write_json_atomic(cell_file, {"spec": want, "result": asdict(cell)})
    logger.info("[%s] MAP@%s (protocol %s) = %.4f  (fit %.1fs, encode %.1fs)", name,
                "all" if spec.topk is None else spec.topk, spec.protocol, cell.map, cell.train_seconds,
                cell.encode_seconds)
    return cell


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def fmt_mean(values: Sequence[float], digits: int = 4) -> str:
    m, s = mean_std(values)
    return f"{m:.{digits}f}" if len(values) == 1 else f"{m:.{digits}f} ± {s:.{digits}f}"


def cells_csv(path: Path, cells: Sequence[Cell], spec: ExperimentSpec, extra_cols: Sequence[str] = ()) -> Path:
    """One row per cell, every column named (protocol included in every row)."""
    header = ["method", "bits", "seed", *extra_cols, "protocol", "topk", "map", "train_seconds",
              "encode_seconds", "n_encoded", "run_dir"]
    rows = [[c.method, c.bits, c.seed, *[c.extra.get(k) for k in extra_cols], spec.protocol,
             "all" if spec.topk is None else spec.topk, c.map, c.train_seconds, c.encode_seconds, c.n_encoded,
             c.run_dir] for c in cells]
    return write_csv(path, header, rows)


def write_report(spec: ExperimentSpec, name: str, title: str, body_md: str, cells: Sequence[Cell],
                 extra_cols: Sequence[str] = (), extra_json: Mapping[str, Any] | None = None,
                 prov_extra: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """``<name>.md`` (title, body, provenance), ``<name>.csv`` (one row per cell) and
    ``<name>.json`` (cells + provenance) in the report directory; ``prov_extra`` adds to (or
    replaces) fields of the spec's provenance."""
    prov = {**spec.record(), **(prov_extra or {})}
    k = "all" if spec.topk is None else spec.topk
    head = (f"# {title}\n\nMAP@{k}, protocol **{spec.protocol}** ({PROTOCOL_DESCRIPTIONS[spec.protocol]}); "
            "Hamming ranking with ties in database order.\n\n")
    files = {
        "markdown": write_text(spec.out_dir / f"{name}.md", head + body_md + "\n" + provenance_markdown(prov)),
        "csv": cells_csv(spec.out_dir / f"{name}.csv", cells, spec, extra_cols),
    }
    files["json"] = spec.out_dir / f"{name}.json"
    write_json_atomic(files["json"], {"experiment": name, "title": title, **(extra_json or {}),
                                      "cells": [asdict(c) for c in cells], "provenance": prov})
    return files


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    return markdown_table(header, rows)
