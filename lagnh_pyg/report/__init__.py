"""Writing results: tables (CSV, markdown), plots, the provenance block of every report, and
the HTML contact sheet of a search. Numbers come in computed (:mod:`lagnh_pyg.metrics`);
files go out atomically (:mod:`lagnh_pyg.files`).
"""
