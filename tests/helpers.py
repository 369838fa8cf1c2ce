"""What several test modules share: the tiny LAGNH config, the check of the CLI's one-line
error contract, and the brute-force MAP reference every MAP is tested against."""

from __future__ import annotations

import numpy as np

#: a LAGNH config that trains in seconds on 2 cores (16-bit runs on the 1,200-item synthetic set)
TINY_LAGNH = {
    "graph": {"k": 5},
    "model": {"anchors": 32, "att_dim": 16, "hidden": 32},
    "train": {"epochs": 4, "lr": 1e-3, "g_steps": 2, "checkpoint_every": 2, "threads": 1,
              "batch_size": 128, "seed_batch_size": 100, "num_neighbors": [4, 3]},
    "encode": {"k": 5, "batch_size": 64},
}
MODES = ["full", "faithful", "sampled"]


def error_line(result, match: str | None = None, code: int = 2) -> str:
    """The contract of a refused command (a CliRunner result): exit ``code``, exactly one line
    on stderr starting with ``error: `` (holding ``match`` when given), no traceback. Returns it."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    if match is not None:
        assert match in lines[0], lines[0]
    return lines[0]


# -- the MAP reference: plain Python loops over the definitions ---------------------------------
def ref_ranking(qcode, dbcodes):
    """Sign codes -> database indices sorted by (Hamming distance, database index)."""
    bits = qcode.shape[0]
    dist = [(bits - int(np.dot(qcode, c))) // 2 for c in dbcodes]
    return sorted(range(len(dbcodes)), key=lambda i: (dist[i], i)), dist


def ref_relevant(ql, dl):
    return [bool(np.any((ql > 0) & (row > 0))) for row in dl]


def ref_map(Q, D, QL, DL, topk, protocol="lagnh"):
    """MAP@topk of sign codes (+-1; real codes: their signs, 0 as -1) under ``protocol``:
    Hamming ranking, ties in database order; AP@K = mean of P@j over the relevant items in the
    top K; the mean over the queries with a relevant database item (``lagnh``), all of them
    (``calctopmap``) or those with a hit in the top K (``hit``)."""
    Q, D = np.where(np.asarray(Q) > 0, 1, -1), np.where(np.asarray(D) > 0, 1, -1)
    aps, counted = [], []
    for qc, ql in zip(Q, QL):
        order, _ = ref_ranking(qc, D)
        rel = ref_relevant(ql, DL)
        K = len(D) if topk is None else min(topk, len(D))
        hits, s = 0, 0.0
        for j in range(1, K + 1):
            if rel[order[j - 1]]:
                hits += 1
                s += hits / j
        ap = s / hits if hits else 0.0
        aps.append(ap)
        if protocol == "lagnh":
            counted.append(any(rel))
        elif protocol == "calctopmap":
            counted.append(True)
        else:
            counted.append(hits > 0)
    sel = [a for a, c in zip(aps, counted) if c]
    return sum(sel) / len(sel) if sel else 0.0
