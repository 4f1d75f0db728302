# SPDX-License-Identifier: BSD-3-Clause
"""Normalize against its peers: NumPy on dense arrays, scikit-learn on sparse matrices.

    python benchmarks/bench_normalize.py [--repeats 7] [--threads 1,2] [--quick]

Cases (the targets of issue 6 are the first three, with 2 threads):

* dense 4096 x 4096 float32 along axis 0 and axis 1, against
  ``W / np.maximum(np.linalg.norm(W, axis=a, keepdims=True), 1e-12)``;
* CSR 100,000 x 1,000 at 1% density along axis 0 (and axis 1, and CSC),
  against ``sklearn.preprocessing.normalize(X, norm="l2", axis=a)``.

Every contender runs out of place on the same input and is checked against
the peer before it is timed.  Each repeat times caffe2op and its peer back
to back (so that load from other processes hits both alike); the report
gives the median of the repeats (and the minimum) and the ratio of medians.
"""

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

import caffe2op


def _time(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _cases(quick):
    rng = np.random.default_rng(0)
    side = 2048 if quick else 4096
    dense = rng.standard_normal((side, side)).astype(np.float32)
    for axis in (0, 1):
        yield (
            f"dense {side}x{side} float32 axis={axis}",
            "numpy",
            lambda a=axis: caffe2op.normalize(dense, axis=a),
            lambda a=axis: dense / np.maximum(np.linalg.norm(dense, axis=a, keepdims=True), 1e-12),
        )
    try:
        import scipy.sparse as sp
        from sklearn.preprocessing import normalize as sk_normalize
    except ImportError as err:  # peers missing: report, do not fake
        print(f"# sparse cases skipped: {err}", file=sys.stderr)
        return
    rows = 20_000 if quick else 100_000
    csr = sp.random(rows, 1000, density=0.01, format="csr", dtype=np.float32, random_state=0)
    csc = csr.tocsc()
    for name, matrix, axes in (("CSR", csr, (0, 1)), ("CSC", csc, (0, 1))):
        for axis in axes:
            yield (
                f"{name} {rows}x1000 1% float32 axis={axis}",
                "sklearn",
                lambda m=matrix, a=axis: caffe2op.normalize(m, axis=a),
                lambda m=matrix, a=axis: sk_normalize(m, norm="l2", axis=a),
            )


def _check(ours, peer):
    a, b = ours(), peer()
    a = a.toarray() if hasattr(a, "toarray") else a
    b = b.toarray() if hasattr(b, "toarray") else b
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats (at least 5; default 7)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--quick", action="store_true", help="smaller inputs")
    args = parser.parse_args(argv)
    repeats = max(5, args.repeats)
    threads = [int(t) for t in args.threads.split(",")]
    print(
        f"# caffe2op {caffe2op.__version__}, numpy {np.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; median of {repeats} repeats (min)"
    )
    print("| case | threads | caffe2op ms | peer | peer ms | speed-up |\n|---|---|---|---|---|---|")
    for name, peer_name, ours, peer in _cases(args.quick):
        for n in threads:
            caffe2op.set_num_threads(n)
            _check(ours, peer)  # also the warm-up
            mine, theirs = [], []
            for _ in range(repeats):
                mine.append(_time(ours))
                theirs.append(_time(peer))
            m, t = statistics.median(mine), statistics.median(theirs)
            print(
                f"| {name} | {n} | {m * 1e3:.2f} ({min(mine) * 1e3:.2f}) | {peer_name} | "
                f"{t * 1e3:.2f} ({min(theirs) * 1e3:.2f}) | {t / m:.2f}x |",
                flush=True,
            )
    caffe2op.set_num_threads(None)


if __name__ == "__main__":
    main()
