"""benchmarks/gpu_check.py --smoke: the GPU check's own code path, on tiny sizes on the CPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_smoke_runs_on_cpu(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--work",
                        str(tmp_path / "w")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "COCO-size full-graph training" in out and "1M-node sampled epoch" in out
    assert "default config (configs/demo.yaml)" in out
    assert out.count("items/s") == 3 and "seed nodes/s" in out
    maps = [float(line.rsplit("MAP@1000 (protocol lagnh) ", 1)[1].split()[0]) for line in out.splitlines()
            if "MAP@1000" in line]
    assert len(maps) == 3 and all(0.0 < m <= 1.0 for m in maps)
    assert not (tmp_path / "w").exists()  # the script cleans up its work directory


def test_gpu_check_refuses_an_unknown_part_in_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--parts", "coco,gpu",
                        "--work", str(tmp_path / "w")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "--parts takes coco, big and default" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "w").exists()  # refused before any work
