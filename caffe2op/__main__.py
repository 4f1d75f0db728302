# SPDX-License-Identifier: BSD-3-Clause
"""Command line: ``python -m caffe2op {config,bench}``."""

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
    parser = argparse.ArgumentParser(prog="python -m caffe2op", description="caffe2op command line")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("config", help="print the version, build, threads and OpenCL devices")
    commands.add_parser("bench", help="benchmarks against NumPy, torch and scikit-learn (bench --help)")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # the harness parses its own options
        from .bench import main as bench_main

        return bench_main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "config":
        from . import show_config

        show_config()
    return 0


if __name__ == "__main__":
    sys.exit(main())
