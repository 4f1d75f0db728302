# SPDX-License-Identifier: BSD-3-Clause
"""Time SparseNormalize's OpenCL kernels, with and without the device bounds check.

Run by hand (no test runs it)::

    python benchmarks/bench_opencl.py [--rows 1000000] [--cols 64] [--indices 100000] [--device opencl:0]

For float32 and float16 tables of rows x cols, with ``indices`` random int64
indices already on the device, it reports the median over ``--repeat`` calls
of: the device time of each step from profiling events (clearing the 4-byte
status and the hash set, the bounds-check kernel, the normalisation kernel)
and the wall time of a whole call, with the check (which waits for the
queue to read the status back) and without it (enqueue, then finish).
Constant-norm mode (``use_max_norm=False``) is used so that every call reads
and writes every selected row.  The CPU (Cython) kernel on the same data is
timed for comparison.
"""

import argparse
import statistics
import time

import numpy as np
import pyopencl as cl
import pyopencl.array as cla

import caffe2op
from caffe2op import opencl
from caffe2op.devices import backend_for
from caffe2op.ops.sparse_normalize.opencl_impl import enqueue_sparse_normalize


def _ms(seconds):
    return f"{seconds * 1e3:8.3f} ms"


def bench(backend, dtype, rows, cols, n_indices, repeat, seed=0):
    rng = np.random.default_rng(seed)
    host = rng.standard_normal((rows, cols)).astype(dtype)
    indices = rng.integers(0, rows, n_indices).astype(np.int64)
    distinct = np.unique(indices).size
    queue = cl.CommandQueue(backend.context, properties=cl.command_queue_properties.PROFILING_ENABLE)
    table = cla.to_device(queue, host)
    index_array = cla.to_device(queue, indices)
    steps = {True: {}, False: {}}
    walls = {True: [], False: []}
    # Alternate the two variants call by call so that load from other
    # processes affects both alike.
    for i in range(repeat + 1):
        for check in (True, False):
            events = []
            queue.finish()
            start = time.perf_counter()
            enqueue_sparse_normalize(
                "SparseNormalize", queue, backend.info, table, index_array, False, 1.0, check=check, events=events
            )
            queue.finish()
            wall = time.perf_counter() - start
            if i == 0:
                continue  # the first call builds (or loads) the program
            walls[check].append(wall)
            for step, event in events:
                steps[check].setdefault(step, []).append((event.profile.end - event.profile.start) * 1e-9)
    results = {
        check: ({k: statistics.median(v) for k, v in steps[check].items()}, statistics.median(walls[check]))
        for check in (True, False)
    }
    cpu_times = []
    for _ in range(repeat):
        start = time.perf_counter()
        caffe2op.sparse_normalize(host, indices, use_max_norm=False, norm=1.0)
        cpu_times.append(time.perf_counter() - start)
    return distinct, results, statistics.median(cpu_times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cols", type=int, default=64)
    parser.add_argument("--indices", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=25)
    parser.add_argument("--device", default="opencl", help="opencl, opencl:N, cuda or cuda:N")
    args = parser.parse_args()
    backend = backend_for(opencl.resolve_device(args.device))
    info = backend.info
    print(f"device: {backend.name}; {info.platform}; {info.version}; {info.compute_units} compute units")
    print(f"table {args.rows} x {args.cols}, {args.indices} random int64 indices, median of {args.repeat} calls")
    print(f"CPU threads: {caffe2op.get_num_threads()}")
    for dtype in (np.float32, np.float16):
        distinct, results, cpu = bench(backend, dtype, args.rows, args.cols, args.indices, args.repeat)
        print(f"\n{np.dtype(dtype).name} ({distinct} distinct rows)")
        for check in (True, False):
            steps, wall = results[check]
            parts = ", ".join(f"{name} {_ms(t).strip()}" for name, t in steps.items())
            label = "with check   " if check else "without check"
            print(f"  {label}: wall {_ms(wall)}  device: {parts}")
        overhead = results[True][1] - results[False][1]
        print(f"  bounds check costs {_ms(overhead).strip()} of wall time ({overhead / results[False][1]:+.1%})")
        print(f"  CPU kernel (Cython, host arrays, includes its host bounds check): {_ms(cpu)}")


if __name__ == "__main__":
    main()
