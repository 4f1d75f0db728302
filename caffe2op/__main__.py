# SPDX-License-Identifier: BSD-3-Clause
"""Command line: ``python -m caffe2op {config,demo}``."""

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
    demo = commands.add_parser(
        "demo", help="train a small embedding model end to end (generated backward net, SparseNormalize)"
    )
    from .examples import embedding_demo

    embedding_demo.add_arguments(demo)
    args = parser.parse_args(argv)
    if args.command == "config":
        from . import show_config

        show_config()
    elif args.command == "demo":
        return embedding_demo.run_from_args(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
