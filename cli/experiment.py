"""`lagnh experiment ...`: the paper's tables and figures on any dataset directory.

Each command is a thin wrapper over :mod:`lagnh_pyg.experiments`. Another experiment family
registers its command on ``app`` the same way (``lagnh experiment scaling`` lives with the
scaling work, see the end of this file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import DeviceOpt, handle_errors, out, parse_topk

app = typer.Typer(no_args_is_help=True, help="The paper's tables and figures: accuracy, timing, ablation, epochs, sensitivity.")

# Options every experiment shares.
Data = Annotated[Path, typer.Option("--data", help="Dataset directory (with labels, for evaluation).")]
Out = Annotated[Path, typer.Option("--out", help="Report directory (created; runs kept in OUT/runs, reused when unchanged).")]
Bits = Annotated[str, typer.Option("--bits", help="Code lengths, comma-separated.")]
TopK = Annotated[str, typer.Option("--topk", help="K of MAP@K, or 'all'.")]
Protocol = Annotated[str, typer.Option("--protocol", help="lagnh, calctopmap or hit.")]
Seeds = Annotated[str, typer.Option("--seeds", help="Seeds, comma-separated: one run each, tables show mean ± std.")]
ConfigOpt = Annotated[str | None, typer.Option("--config", metavar="NAME|FILE", help="LAGNH config: a shipped config's name (demo, coco, nuswide) or a YAML file (default: built-in defaults).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="LAGNH override key=value (repeatable).")]
Reuse = Annotated[bool, typer.Option("--reuse/--no-reuse", help="Reuse finished runs in OUT/runs whose settings match.")]


def _spec(data, out_dir, topk, protocol, seeds, config, overrides, device, reuse):
    from lagnh_pyg.experiments import ExperimentSpec
    from lagnh_pyg.experiments.common import parse_list


    _check_out(out_dir, data)
    return ExperimentSpec(data_dir=data, out_dir=out_dir, config=config, overrides=tuple(overrides or ()),
                          topk=parse_topk(topk), protocol=protocol, seeds=tuple(parse_list(seeds, "--seeds", int)),
                          device=device, reuse=reuse, progress=False)


def _check_out(out_dir, data=None) -> None:
    """A report directory that cannot be written, that lies in a run or a dataset, or that is
    (or lies in) the dataset, is refused before hours of work."""
    from lagnh_pyg.ownership import check_output_dir

    check_output_dir(out_dir, "--out", inputs=[data] if data is not None else [], may_hold_inputs=True)


def _bits(bits: str) -> list[int]:
    from lagnh_pyg.experiments.common import parse_list

    return parse_list(bits, "--bits", int)


def _done(files: dict) -> None:
    md = files.get("markdown")
    if md is not None:
        out.print(Path(md).read_text(), markup=False, highlight=False, soft_wrap=True)
    for p in files.values():
        out.print(f"wrote {p}", markup=False, highlight=False, soft_wrap=True)


@app.command()
@handle_errors
def accuracy(
    data: Data, out_dir: Out,
    methods: Annotated[str, typer.Option("--methods", help="Methods, comma-separated: lagnh, lagnh-faithful and the baselines (lsh sklsh sh pcah itq sgh; uhbdnn deepbit ssdh sadh tbh cibhash bihalf), or all (Table 3 + cibhash, bihalf).")] = "lagnh,itq,lsh,pcah",
    bits: Bits = "16,32,64,128", topk: TopK = "1000", protocol: Protocol = "lagnh", seeds: Seeds = "0",
    config: ConfigOpt = None, overrides: SetOpt = None, device: DeviceOpt = "auto", reuse: Reuse = True,
    blocks: Annotated[str, typer.Option("--blocks", help="Table 3 blocks, comma-separated: visual (the baselines hash the features alone: the paper's protocol), same (every baseline hashes LAGNH's inputs, inputs=both, its aux_weight chosen on a validation split of the training data).")] = "visual,same",
    aux_weights: Annotated[str, typer.Option("--aux-weights", help="The aux_weight grid of the same-inputs block and of the tuned cosine reference.")] = "0.25,0.5,1,2,4,8,16,32,64",
    extend_weights: Annotated[bool, typer.Option("--extend-weights/--no-extend-weights", help="When a weight chosen on the validation split is the grid's largest (smallest), go on doubling (halving) it until two weights in a row bring no gain, up to 4096 (down to 1/64), so that no baseline is held at the grid's edge.")] = True,
) -> None:
    """Table 3: MAP@K of each method at each code length, P@K curves (Fig. 2) and the size/time table (Table 4).

    Two blocks: "visual-only baselines (the paper's protocol)", where LAGNH alone sees the
    aux, and "same inputs", where every baseline hashes \\[x/|x|, w a/|a|] with w chosen on the
    training data. Both carry LAGNH and reference rows that do not hash (cosine ranking on the
    features, the aux and their concatenation). Finished runs and choices in OUT are reused.

    Example: lagnh experiment accuracy --data data/demo-views --methods all --bits 16,32,64 --out reports/table3
    """
    from lagnh_pyg.experiments import run_accuracy
    from lagnh_pyg.experiments.common import parse_list

    spec = _spec(data, out_dir, topk, protocol, seeds, config, overrides, device, reuse)
    _done(run_accuracy(spec, parse_list(methods, "--methods"), _bits(bits), blocks=parse_list(blocks, "--blocks"),
                       aux_weights=parse_list(aux_weights, "--aux-weights"), extend_weights=extend_weights))


@app.command()
@handle_errors
def timing(
    data: Data, out_dir: Out,
    methods: Annotated[str, typer.Option("--methods", help="Methods, comma-separated.")] = "lagnh,itq,lsh,pcah,sh,sklsh,sgh",
    bits: Bits = "32", topk: TopK = "1000", protocol: Protocol = "lagnh", seeds: Seeds = "0",
    config: ConfigOpt = None, overrides: SetOpt = None, device: DeviceOpt = "auto",
) -> None:
    """Table 4: training and encoding seconds per method (always measured afresh)."""
    from lagnh_pyg.experiments import run_timing
    from lagnh_pyg.experiments.common import parse_list

    spec = _spec(data, out_dir, topk, protocol, seeds, config, overrides, device, False)
    _done(run_timing(spec, parse_list(methods, "--methods"), _bits(bits)))


@app.command()
@handle_errors
def ablation(
    data: Data, out_dir: Out,
    variants: Annotated[str | None, typer.Option("--variants", help="LAGNH variants, comma-separated (default: Table 5's nine).")] = None,
    bits: Bits = "32", topk: TopK = "1000", protocol: Protocol = "lagnh", seeds: Seeds = "0",
    config: ConfigOpt = None, overrides: SetOpt = None, device: DeviceOpt = "auto", reuse: Reuse = True,
) -> None:
    """Table 5: MAP@K of the LAGNH variants."""
    from lagnh_pyg.experiments import TABLE5_VARIANTS, run_ablation
    from lagnh_pyg.experiments.common import parse_list

    spec = _spec(data, out_dir, topk, protocol, seeds, config, overrides, device, reuse)
    vs = parse_list(variants, "--variants") if variants else list(TABLE5_VARIANTS)
    _done(run_ablation(spec, vs, _bits(bits)))


@app.command()
@handle_errors
def epochs(
    data: Data, out_dir: Out,
    epoch_list: Annotated[str, typer.Option("--epochs", help="Increasing epoch counts at which to evaluate.")] = "10,25,50,100,200,300",
    bits: Bits = "32", topk: TopK = "1000", protocol: Protocol = "lagnh", seeds: Seeds = "0",
    config: ConfigOpt = None, overrides: SetOpt = None, device: DeviceOpt = "auto",
) -> None:
    """Fig. 3: MAP versus training epochs (one run per code length, resumed between points)."""
    from lagnh_pyg.experiments import run_epochs
    from lagnh_pyg.experiments.common import parse_list

    spec = _spec(data, out_dir, topk, protocol, seeds, config, overrides, device, False)
    _done(run_epochs(spec, parse_list(epoch_list, "--epochs", int), _bits(bits)))


@app.command()
@handle_errors
def sensitivity(
    data: Data, out_dir: Out,
    param: Annotated[list[str] | None, typer.Option("--param", help="NAME or NAME=v1,v2,... (alpha, beta, lambda, eta; repeatable). Default: all four on their default grids.")] = None,
    bits: Bits = "32", topk: TopK = "1000", protocol: Protocol = "lagnh", seeds: Seeds = "0",
    config: ConfigOpt = None, overrides: SetOpt = None, device: DeviceOpt = "auto", reuse: Reuse = True,
) -> None:
    """Fig. 4: MAP versus alpha, beta, lambda and eta (one varied at a time)."""
    from lagnh_pyg.errors import InputError
    from lagnh_pyg.experiments import DEFAULT_GRID, PARAMETERS, run_sensitivity
    from lagnh_pyg.experiments.common import parse_list
    from lagnh_pyg.params import split_assignment

    grid: dict[str, list[float]] = {}
    for p in param or list(DEFAULT_GRID):  # NAME (its default grid) or NAME=v1,v2,...
        name, values = split_assignment(p, "--param", "--param eta=0,1,2") if "=" in p else (p.strip(), "")
        if name not in PARAMETERS:
            raise InputError(f"--param: unknown parameter {name!r}; choose from {', '.join(PARAMETERS)}")
        grid[name] = parse_list(values, f"--param {name}", float) if values else list(DEFAULT_GRID[name])
    spec = _spec(data, out_dir, topk, protocol, seeds, config, overrides, device, reuse)
    _done(run_sensitivity(spec, grid, _bits(bits)))


@app.command()
@handle_errors
def scaling(
    sizes: Annotated[str, typer.Option("--sizes", help="Training-set sizes N, comma-separated.")] = "5000,20000,100000,1000000",
    out_dir: Out = Path("reports/scaling"),
    bits: Annotated[int, typer.Option("--bits", help="Code length.")] = 32,
    full_max: Annotated[int, typer.Option(help="Largest N timed with full-graph epochs.")] = 20000,
    max_batches: Annotated[int, typer.Option(help="Cap of a sampled epoch, in seed batches (0: true epochs; a cap times one epoch's first batches).")] = 0,
    epochs: Annotated[int, typer.Option(help="True sampled epochs (seed visits per node) before MAP is measured.")] = 1,
    db_max: Annotated[int, typer.Option(help="Database subsample for MAP@1000.")] = 20000,
    data_root: Annotated[Path | None, typer.Option(help="Where the synthetic datasets go (default OUT/data; /tmp for big N).")] = None,
    keep_data: Annotated[bool, typer.Option(help="Keep the generated datasets.")] = False,
    threads: Annotated[int, typer.Option(help="torch/FAISS threads of each measurement.")] = 2,
    device: DeviceOpt = "auto",
) -> None:
    """Graph build, epoch seconds (full and sampled), peak RSS and MAP@1000 versus N on synthetic data.

    Example: lagnh experiment scaling --sizes 5000,20000,100000,1000000 --out reports/scaling --data-root /tmp/scaling
    """
    from lagnh_pyg.experiments.common import parse_list
    from lagnh_pyg.experiments.scaling import run_scaling

    _check_out(out_dir)
    if data_root is not None:  # its synthetic datasets: never inside a run or a dataset
        from lagnh_pyg.ownership import check_output_dir

        check_output_dir(data_root, "--data-root")
    path = run_scaling(parse_list(sizes, "--sizes", int), out_dir, data_root=data_root, bits=bits, full_max=full_max,
                       max_batches=max_batches, db_max=db_max, threads=threads, device=device, keep_data=keep_data,
                       epochs=epochs)
    out.print(f"wrote {path / 'scaling.md'}")


@app.command("tune")
@handle_errors
def tune(
    data: Data, out_dir: Out,
    method: Annotated[str, typer.Option("--method", help="A baseline (e.g. ssdh).")],
    grid: Annotated[list[str] | None, typer.Option("--grid", help="NAME=v1,v2,... (repeatable): the values to try; the rest from configs/baselines/METHOD.yaml (none: the defaults alone, e.g. a reference method).")] = None,
    bits: Annotated[int, typer.Option("--bits", help="Code length.")] = 32,
    fraction: Annotated[float, typer.Option(help="Share of the training split held out for validation.")] = 0.2,
    topk: TopK = "1000", protocol: Protocol = "lagnh",
    seed: Annotated[int, typer.Option(help="Seed of the split and the fits.")] = 0,
    device: DeviceOpt = "cpu",
    sets: Annotated[list[str] | None, typer.Option("--set", help="A parameter key=value held fixed at every grid point (repeatable), e.g. inputs=both.")] = None,
    extend_weights: Annotated[bool, typer.Option("--extend-weights/--no-extend-weights", help="With --grid aux_weight=... alone: when the best weight is the grid's largest (smallest), go on doubling (halving) it until two weights in a row bring no gain, up to 4096 (down to 1/64), as `experiment accuracy` does.")] = False,
) -> None:
    """Choose a baseline's unstated hyper-parameters on a validation split of the training data (never the queries).

    With --set inputs=both the fit and validation items are hashed with their own aux, and
    aux_weight can be on the grid.

    Example: lagnh experiment tune --data data/demo --out reports/tune --method ssdh --grid alpha=0.5,1,2 --grid lr=0.01,0.1
    Example: lagnh experiment tune --data data/demo --out reports/tune --method itq --set inputs=both --grid aux_weight=0.25,0.5,1,2,4
    Example (past the grid's edge): ... --method itq --set inputs=both --grid aux_weight=1,2,4 --extend-weights
    """
    from lagnh_pyg.device import resolve_device
    from lagnh_pyg.experiments.common import parse_list
    from lagnh_pyg.experiments.tuning import tune_baseline
    from lagnh_pyg.params import split_assignment, split_assignments

    values: dict[str, list[str]] = {}
    for g in grid or []:
        name, vals = split_assignment(g, "--grid", "--grid alpha=0.5,1,2")
        values[name] = parse_list(vals, f"--grid {name}")
    _check_out(out_dir, data)
    path = tune_baseline(method.lower(), data, bits, values, out_dir, seed=seed, fraction=fraction, topk=parse_topk(topk),
                         protocol=protocol, device=resolve_device(device), fixed=split_assignments(sets, "--set", "--set iterations=50"),
                         extend_weights=extend_weights)
    out.print(Path(path).read_text(), markup=False, highlight=False, soft_wrap=True)


@app.command("rerank")
@handle_errors
def rerank(
    runs: Annotated[list[Path], typer.Argument(help="Run directories with codes (`lagnh encode`), on datasets with labels.")],
    out_dir: Out,
    depth: Annotated[int, typer.Option("--rerank", help="R: the Hamming candidates re-ranked.")] = 1000,
    topk: Annotated[int, typer.Option("--topk", help="K of MAP@K.")] = 1000,
    fraction: Annotated[float, typer.Option(help="Share of each training split held out for validation.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the validation split.")] = 0,
    device: DeviceOpt = "cpu",
    save: Annotated[bool, typer.Option(help="Keep each run's choice (its dataset's) in RUN/rerank.json: the score evaluate, search and serve then use.")] = False,
) -> None:
    """Choose the re-rank score on validation splits of the runs' training data (one for all runs,
    one per dataset), then report plain and re-ranked MAP of their queries (protocols lagnh and ties).

    Example: lagnh experiment rerank runs/det16 runs/det32 runs/tags16 runs/tags32 --out reports/rerank --save
    """
    from lagnh_pyg.device import resolve_device
    from lagnh_pyg.errors import InputError
    from lagnh_pyg.experiments.rerank import rerank_study

    if depth < 1 or topk < 1:
        raise InputError(f"--rerank and --topk must be positive integers, got {depth} and {topk}")
    _check_out(out_dir)  # never in a run (rerank --save writes RUN/rerank.json itself) or a dataset
    _done(rerank_study(runs, out_dir, depth=depth, topk=topk, fraction=fraction, seed=seed,
                       device=resolve_device(device), save=save))
