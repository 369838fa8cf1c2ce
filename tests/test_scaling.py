"""The scaling experiment's row: true epochs with the default sampled settings, seeds/s, encoding."""

import json

from lagnh_pyg.experiments.scaling import generate_data, measure, write_scaling_report


def test_scaling_row_measures_the_method(tmp_path):
    data = generate_data(400, tmp_path / "syn400", dim=16)
    row = measure(data, full_max=400, threads=1, device="cpu", epochs=2, db_max=500)
    for key in ("N", "graph_s", "full_epoch_s", "sampled_s", "map1000", "peak_rss_gib"):  # today's keys stay
        assert key in row
    assert row["N"] == 400 and row["encoding"] == "neighbours" and not row["sampled_capped"]
    assert row["sampled_epochs"] == 2 and row["sampled_batches"] == row["batches_per_true_epoch"] == 1
    assert row["seeds_per_s"] > 0 and 0 <= row["map1000"] <= 1
    capped = measure(data, full_max=0, threads=1, device="cpu", max_batches=1, db_max=500)
    assert capped["full_epoch_s"] is None and capped["sampled_epochs"] == 1
    md = write_scaling_report([row, capped], tmp_path, max_batches=0, db_max=500, epochs=2)
    text = md.read_text()
    assert "seeds/s" in text and "(neighbours)" in text and "2 true epoch(s)" in text
    json.dumps(row)  # JSON-serialisable, as run_scaling writes it
