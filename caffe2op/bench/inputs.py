# SPDX-License-Identifier: BSD-3-Clause
"""Inputs shared by the benchmark cases: seeded tables and index sets, tolerances, cache sizes."""

import pathlib

import numpy as np

SEED = 20261121


def embedding_table(n_rows, width, dtype, rng, norm=1.0):
    """Rows with L2 norms uniform in [0.5, 1.5] * norm: about half exceed ``norm``."""
    table = rng.standard_normal((n_rows, width), dtype=np.float32)
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    table *= rng.uniform(0.5, 1.5, (n_rows, 1)).astype(np.float32) * norm
    return table.astype(dtype, copy=False)


def indices_with_duplicates(n_rows, count, duplicate_share, rng):
    """``count`` indices of which ``duplicate_share`` repeat earlier ones."""
    distinct = max(1, int(round(count * (1 - duplicate_share))))
    pool = rng.choice(n_rows, size=distinct, replace=False)
    extra = rng.choice(pool, size=count - distinct, replace=True)
    return rng.permutation(np.concatenate([pool, extra])).astype(np.int64)


def tolerance(dtype):
    """``rtol``/``atol`` of the correctness check for a dtype."""
    return dict(rtol=1e-2, atol=1e-3) if np.dtype(dtype) == np.float16 else dict(rtol=1e-5, atol=1e-6)


def last_level_cache_bytes(default=32 << 20):
    """The largest CPU cache of this machine, from sysfs (``default`` where it cannot be read)."""
    sizes = []
    for entry in pathlib.Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = entry.read_text().strip().upper()
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        try:
            sizes.append(int(text.rstrip("KMG")) * scale)
        except ValueError:
            continue
    return max(sizes, default=default)
