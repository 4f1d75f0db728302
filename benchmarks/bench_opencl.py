# SPDX-License-Identifier: BSD-3-Clause
"""Time SparseNormalize's OpenCL kernels, with and without the device bounds check.

Run by hand (no test runs it)::

    python benchmarks/bench_opencl.py [--rows 1000000] [--cols 64] [--indices 100000] [--device opencl:0]
    python benchmarks/bench_opencl.py --suite gpu [--scale 1.0] [--json out.json]   # what .ci/gpu runs
    python benchmarks/bench_opencl.py --suite host-table                             # issue 10 item 5

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


# --- the GPU suite (.ci/gpu): every headline case against its predicted H100 time ----------------------------
#
# Predictions: device time of the kernel(s) on an H100 SXM (3.35 TB/s), from the performance
# models in the headers of opencl_kernels/*.cl.  No GPU has run them yet.
PREDICTED_H100_US = {
    "sparse_normalize 1Mx64 f32, 100k random indices": (20, 25),
    "sparse_normalize 1Mx64 f32, 100k indices into 1k rows": (10, 20),
    "normalize (1M, 64) f32 axis 1": (200, 260),
    "normalize (1M, 32) f32 axis 1": (100, 130),
    "normalize (4096, 4096) f32 axis 0": (150, 250),
    "normalize (1M, 64) f32 axis 0": (280, 450),
    "normalize (8, 10M) f32 axis 1": (400, 600),  # the split launches (normalize_long.cl), all three
    "sum 1,000,003 f32 (prime)": (5, 8),
}


def _device_us(events):
    return sum(e.profile.end - e.profile.start for e in events) * 1e-3


def _median_device_us(run, repeat):
    """Median device time (µs) of ``run()`` (which returns the events of one call), after one warm-up call."""
    run()
    return statistics.median(_device_us(run()) for _ in range(repeat))


def gpu_suite(backend, scale, repeat):
    """{case: (measured device µs, (predicted low, high) µs, extra)} for the GPU suite (sizes times ``scale``)."""
    queue = cl.CommandQueue(backend.context, properties=cl.command_queue_properties.PROFILING_ENABLE)
    rng = np.random.default_rng(0)
    results = {}
    rows = max(1000, int(1_000_000 * scale))
    table = cla.to_device(queue, rng.standard_normal((rows, 64)).astype(np.float32))
    for case, pool in (("100k random indices", rows), ("100k indices into 1k rows", 1000)):
        indices = cla.to_device(queue, rng.integers(0, pool, max(100, int(100_000 * scale))).astype(np.int64))

        def run(indices=indices):
            events = []
            enqueue_sparse_normalize(
                "SparseNormalize", queue, backend.info, table, indices, False, 1.0, check=False, events=events
            )
            queue.finish()
            # the hash-set fill, the claim pass and the row pass (sparse_normalize.cl's model)
            return [e for step, e in events if step in ("clear", "claim", "normalize")]

        results[f"sparse_normalize 1Mx64 f32, {case}"] = _median_device_us(run, repeat)
    table.data.release()  # before the Normalize cases allocate theirs
    cases = (((1_000_000, 64), 1), ((1_000_000, 32), 1), ((4096, 4096), 0), ((1_000_000, 64), 0), ((8, 10_000_000), 1))
    for shape, axis in cases:
        scaled = (max(8, int(shape[0] * scale)), shape[1]) if shape[0] > 8 else (8, max(64, int(shape[1] * scale)))
        if axis == 0 and shape[0] > 65536:
            scaled = (max(scaled[0], 70_000), shape[1])  # still long columns (over 65,536 rows) when scaled down
        x = cla.to_device(queue, rng.standard_normal(scaled).astype(np.float32))
        out = cla.empty_like(x)

        def run(x=x, axis=axis, out=out):
            out.finish()  # clears out.events: what follows are this call's launches (three when split)
            caffe2op.normalize(x, axis=axis, out=out)
            queue.finish()
            return list(out.events)

        label = {1_000_000: "1M", 4096: "4096", 8: "8"}[shape[0]]
        second = {64: "64", 32: "32", 4096: "4096", 10_000_000: "10M"}[shape[1]]
        results[f"normalize ({label}, {second}) f32 axis {axis}"] = _median_device_us(run, repeat)
        del x, out
    n = 1_000_003 if scale >= 0.5 else 10_007  # both prime
    a = cla.to_device(queue, rng.standard_normal(n).astype(np.float32))
    out = cla.empty_like(a)
    program = opencl.get_program(backend.context, "sum.cl", {"REAL": "float"})
    kernel = opencl.get_kernel(program, "caffe2op_sum_fwd")

    def run():
        event = opencl.launch(
            queue,
            kernel,
            opencl.elementwise_size(queue, n),
            None,
            out.base_data,
            a.base_data,
            a.base_data,
            np.uint64(n),
        )
        event.wait()
        return [event]

    results["sum 1,000,003 f32 (prime)"] = _median_device_us(run, repeat)
    return {case: (us, PREDICTED_H100_US[case]) for case, us in results.items()}


def torch_embedding_renorm(scale, repeat):
    """Median µs of torch.embedding_renorm_ on CUDA for the headline case, or a reason it did not run."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "torch has no CUDA device"
    rows = max(1000, int(1_000_000 * scale))
    weight = torch.randn(rows, 64, device="cuda")
    indices = torch.randint(0, rows, (max(100, int(100_000 * scale)),), device="cuda")
    times = []
    for i in range(repeat + 1):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        with torch.no_grad():
            torch.embedding_renorm_(weight, indices, 1.0, 2.0)
        end.record()
        torch.cuda.synchronize()
        if i:
            times.append(start.elapsed_time(end) * 1e3)
    return statistics.median(times)


def host_table_suite(rows, cols, n_indices, repeat):
    """sparse_normalize(numpy table, indices, device="opencl"): compacted path, old whole-table path, CPU."""
    from caffe2op.ops.sparse_normalize.opencl_impl import _sparse_normalize_host_table

    backend = backend_for(opencl.default_device())
    rng = np.random.default_rng(0)
    table = rng.standard_normal((rows, cols)).astype(np.float32)
    indices = rng.integers(0, rows, n_indices).astype(np.int64)

    def old_path():  # what the OpenCL path did before: the whole table down and back
        device_table = backend.from_host(table)
        enqueue_sparse_normalize(
            "SparseNormalize",
            backend.queue,
            backend.info,
            device_table,
            backend.from_host(indices),
            False,
            1.0,
            check=False,
        )
        np.copyto(table, backend.to_host(device_table))

    paths = {
        "old OpenCL path (whole table)": old_path,
        "OpenCL, selected rows only": lambda: _sparse_normalize_host_table(
            "SparseNormalize", table, indices, False, 1.0, backend
        ),
        "CPU": lambda: caffe2op.sparse_normalize(table, indices, use_max_norm=False, norm=1.0),
    }
    times = {name: [] for name in paths}
    for i in range(repeat + 1):
        for name, call in paths.items():  # interleaved, so that load from other processes hits all alike
            start = time.perf_counter()
            call()
            if i:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=["sparse-normalize", "gpu", "host-table"], default="sparse-normalize")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="gpu suite: scale the sizes (e.g. 0.1 on a CPU device)"
    )
    parser.add_argument("--json", help="gpu suite: also write the results to this JSON file")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cols", type=int, default=64)
    parser.add_argument("--indices", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=25)
    parser.add_argument("--device", default="opencl", help="opencl, opencl:N, cuda or cuda:N")
    args = parser.parse_args()
    if args.suite == "host-table":
        times = host_table_suite(args.rows, args.cols, args.indices, args.repeat)
        print(
            f"sparse_normalize(numpy table {args.rows} x {args.cols} float32, {args.indices} random indices, "
            "device=...),"
            f" median of {args.repeat} interleaved calls:"
        )
        cpu = times["CPU"]
        for name, t in times.items():
            print(f"  {name:32s} {_ms(t)}  ({t / cpu:6.1f} x the CPU path)")
        return
    backend = backend_for(opencl.resolve_device(args.device))
    info = backend.info
    if args.suite == "gpu":
        print(
            f"device: {backend.name}; {info.platform}; {info.version}; {info.compute_units} compute units; "
            f"scale {args.scale}"
        )
        results = gpu_suite(backend, args.scale, args.repeat)
        print(f"{'case':58s} {'measured':>12s}  predicted H100 (full size)")
        for case, (us, (low, high)) in results.items():
            print(f"{case:58s} {us:10.1f} us  {low}-{high} us")
        renorm = torch_embedding_renorm(args.scale, args.repeat)
        line = f"{renorm:.1f} us" if isinstance(renorm, float) else f"not run: {renorm}"
        print(f"{'torch.embedding_renorm_ (CUDA), headline case':58s} {line}")
        if args.json:
            import json

            with open(args.json, "w") as f:
                json.dump(
                    {
                        "device": backend.name,
                        "scale": args.scale,
                        "torch_embedding_renorm_us": renorm,
                        "cases": {c: {"measured_us": us, "predicted_h100_us": p} for c, (us, p) in results.items()},
                    },
                    f,
                    indent=1,
                )
        return
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
