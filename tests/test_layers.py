"""The layers of the package, written once, and checked: no module imports from a layer above
its own (imports inside functions count too), so data flows one way by construction (the
contract import-linter's ``layers`` type expresses; this test needs no extra tool).

The flow, bottom to top: images -> extract -> data -> graph -> nn -> training -> run dir ->
encode -> index -> retrieval / serve; the public Python API (``lagnh_pyg``'s estimators) and the
command line on top. The run directory's format (``rundir``, ``checkpoint``,
``cache_file``) sits below ``training``, which writes it, like the dataset's format
(``data.store``) sits below the importers that write it; its readers sit above. The method
registry (``encoders``) is a plug-in point: its encoders register themselves from above and
are loaded by name, so it imports none of them.
"""

from test_imports import import_graph

# top first; modules separated by "|" form one layer (they may import each other)
LAYERS = [
    "lagnh_pyg.cli | lagnh_pyg.__main__",
    "lagnh_pyg | lagnh_pyg.estimators",
    "lagnh_pyg.serve",
    "lagnh_pyg.demo | lagnh_pyg.experiments | lagnh_pyg.index_folder",
    "lagnh_pyg.collection | lagnh_pyg.ingest | lagnh_pyg.dedup | lagnh_pyg.added",
    "lagnh_pyg.retrieval",
    "lagnh_pyg.index | lagnh_pyg.rerank",
    "lagnh_pyg.encode | lagnh_pyg.baselines",
    "lagnh_pyg.training",
    "lagnh_pyg.encoders",
    "lagnh_pyg.rundir | lagnh_pyg.checkpoint | lagnh_pyg.cache_file",
    "lagnh_pyg.nn | lagnh_pyg.losses | lagnh_pyg.sampling",
    "lagnh_pyg.graph",
    "lagnh_pyg.knn",
    "lagnh_pyg.data",
    "lagnh_pyg.extract",
    "lagnh_pyg.config | lagnh_pyg.params | lagnh_pyg.metrics | lagnh_pyg.codes | lagnh_pyg.device"
    " | lagnh_pyg.distributed | lagnh_pyg.report | lagnh_pyg.files | lagnh_pyg.ownership | lagnh_pyg.runtime"
    " | lagnh_pyg.errors | lagnh_pyg.version | lagnh_pyg.text | lagnh_pyg.limits",
]
# ``lagnh_pyg`` itself (its __init__: the public API, imported on first use) names that module
# only: every other module must be listed


def _covers(name: str, module: str) -> bool:
    return module == name or (name != "lagnh_pyg" and module.startswith(name + "."))


def layer_of(module: str) -> int:
    """Index in LAYERS (0 = top) of the longest layer entry that is ``module`` or a package of it."""
    best, depth = None, -1
    for i, layer in enumerate(LAYERS):
        for name in (n.strip() for n in layer.split("|")):
            if _covers(name, module) and name.count(".") > depth:
                best, depth = i, name.count(".")
    if best is None:
        raise AssertionError(f"{module} is in no layer; add it to LAYERS in tests/test_layers.py")
    return best


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} ({LAYERS[layer_of(m)].split('|')[0].strip()}) imports {t} "
                  f"({LAYERS[layer_of(t)].split('|')[0].strip()})"
                  for m, targets in graph.items() for t in targets if layer_of(t) < layer_of(m))


def test_the_checker_finds_an_upward_import():
    graph = {"lagnh_pyg.graph": {"lagnh_pyg.training.trainer"}, "lagnh_pyg.training.trainer": {"lagnh_pyg.graph"}}
    assert upward_imports(graph) == ["lagnh_pyg.graph (lagnh_pyg.graph) imports lagnh_pyg.training.trainer "
                                     "(lagnh_pyg.training)"]


def test_no_module_imports_a_layer_above_its_own():
    graph = import_graph()
    assert "lagnh_pyg.graph" in graph and "lagnh_pyg.training.runner" in graph
    bad = upward_imports(graph)
    assert not bad, "upward imports: " + "; ".join(bad)


def test_the_bottom_layer_knows_the_run_directory_marker_by_its_name_in_rundir():
    """ownership.py (bottom layer) spells run.json because it cannot import rundir.py."""
    from lagnh_pyg.ownership import MARKER_FILES
    from lagnh_pyg.rundir import RUN_FILE

    assert RUN_FILE in MARKER_FILES
