# SPDX-License-Identifier: BSD-3-Clause
"""Command line: ``python -m caffe2op {config,demo,bench}``."""

import argparse
import sys


def main(argv=None):
    """Run the caffe2op command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    # The demo and the benchmarks parse their own options, and are imported only
    # when asked for (the demo registers its own operator types).
    if argv[:1] == ["demo"]:
        from .examples import embedding_demo

        demo = argparse.ArgumentParser(
            prog="python -m caffe2op demo",
            description="Train a small embedding model end to end (generated backward net, SparseNormalize).",
        )
        embedding_demo.add_arguments(demo)
        return embedding_demo.run_from_args(demo.parse_args(argv[1:]))
    if argv[:1] == ["bench"]:
        from .bench import main as bench_main

        return bench_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m caffe2op",
        description="caffe2op: Caffe2's SparseNormalize, Normalize, StopGradient and ZeroGradient operators "
        "on CPUs and OpenCL devices. Run a command with --help for its options.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    config_help = "print the version, build, threads and OpenCL devices"
    commands.add_parser(
        "config",
        help=config_help,
        description=f"{config_help[0].upper()}{config_help[1:]}: what caffe2op was built with (Cython kernels, "
        "OpenMP), how many threads its CPU kernels use, and every OpenCL device with the DeviceOption that "
        "selects it. The same report is caffe2op.show_config() in Python.",
    )
    commands.add_parser("demo", help="train a small embedding model end to end (demo --help)")
    commands.add_parser(
        "bench", help="time caffe2op against NumPy, numba, torch, scikit-learn and measured limits (bench --help)"
    )
    args = parser.parse_args(argv)
    if args.command is None:  # no command: say what there is
        parser.print_help()
        return 0
    from . import show_config

    show_config()
    return 0


if __name__ == "__main__":
    sys.exit(main())
