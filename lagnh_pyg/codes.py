"""Binary codes: packing, unpacking and the on-disk format of the contract.

Codes are stored packed, ``numpy.packbits(codes > 0, axis=1)``: uint8, ``bits / 8`` bytes an
item, the first bit of a code in the most significant bit of its first byte. ``bits`` must
be a multiple of 8.

A codes directory (a run's ``codes/``, or ``lagnh encode --out DIR``) holds one packed file a
split, ``<split>.npy`` (rows in the order of the split's index array), and ``meta.json``
(format ``lagnh-codes``) naming the model and the dataset they came from.

:func:`itq_rotation` is ITQ's rotation step, shared by the ITQ baseline and LAGNH's codes
rotation (``model.code_rotation: itq``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import InputError

CODES_FORMAT = "lagnh-codes"
CODES_META = "meta.json"


def codes_file(directory: str | os.PathLike, split: str) -> Path:
    """The packed codes of ``split`` in a codes directory."""
    return Path(directory) / f"{split}.npy"


def check_bits(bits: int, packed: bool = True) -> int:
    """Validate a code length: a positive multiple of 8 (``packed``: codes stored packed, as in
    every file and index), or any positive integer (codes held as ±1 in memory, e.g. a
    baseline fitted through the Python API)."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits <= 0:
        raise InputError(f"code length must be a positive integer (8, 16, 32, 64, 128, ...), got {bits!r}")
    if packed and bits % 8:
        raise InputError(f"code length must be a positive multiple of 8 (8, 16, 32, 64, 128, ...), got {bits}")
    return int(bits)


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """±1 (or real-valued, sign taken; 0 counts as -1) or boolean codes -> packed uint8 rows."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise InputError(f"codes must be a 2-D array (items x bits), got shape {codes.shape}")
    check_bits(codes.shape[1])
    return np.packbits(codes > 0, axis=1)


def unpack_codes(packed: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Packed uint8 rows -> ±1 int8 codes."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 2:
        raise InputError(f"packed codes must be a 2-D uint8 array, got {packed.dtype} with shape {packed.shape}")
    bitsarr = np.unpackbits(packed, axis=1)
    if bits is not None:
        bitsarr = bitsarr[:, :bits]
    return (bitsarr.astype(np.int8) * 2 - 1).astype(np.int8)


def as_packed(codes: np.ndarray) -> np.ndarray:
    """Accept packed uint8 or ±1/{0,1}-free sign codes; return packed uint8."""
    codes = np.asarray(codes)
    if codes.dtype == np.uint8:
        return codes
    return pack_codes(codes)


def itq_rotation(V: np.ndarray, iterations: int, rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
    """ITQ's rotation of the rows of ``V`` (n, c): from a random orthogonal R, alternate
    ``B = sgn(V R)`` and the orthogonal Procrustes step ``R = S_hat S^T`` (SVD ``B^T V = S Omega
    S_hat^T``) ``iterations`` times. Returns R (c, c) and ``Q / n = |B - V R|^2 / n`` after each
    B-step (``iterations + 1`` values, never increasing)."""
    c = V.shape[1]
    R, _, _ = np.linalg.svd(rng.standard_normal((c, c)))
    losses = []
    for step in range(iterations + 1):
        Z = V @ R
        B = np.where(Z >= 0, 1.0, -1.0)  # ITQ.m: Z >= 0 -> 1 (the B-step's minimiser)
        losses.append(float(np.square(B - Z).sum()) / len(V))
        if step == iterations:
            break
        S, _, S_hat_t = np.linalg.svd(B.T @ V)
        R = S_hat_t.T @ S.T
    return R, losses
