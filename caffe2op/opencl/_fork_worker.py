# SPDX-License-Identifier: BSD-3-Clause
"""The helper process of :mod:`caffe2op.opencl.fork_proxy`: runs functional calls sent through stdin.

Reads pickled ``(name, args, kwargs)`` tuples from standard input until it
closes, runs ``caffe2op.<name>`` for the names in ``_FUNCTIONS`` only, and
writes ``("ok", result)`` or ``("error", exception)`` to the original
standard output.  Anything the call prints goes to standard error, so it
cannot corrupt the replies.
"""

import os
import pickle
import sys


def main():
    """Serve calls until standard input closes."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests = sys.stdin.buffer
    import caffe2op

    functions = {name: getattr(caffe2op, name) for name in ("sparse_normalize", "normalize", "stop_gradient")}
    while True:
        try:
            name, args, kwargs = pickle.load(requests)
        except EOFError:
            return
        try:
            reply = ("ok", functions[name](*args, **kwargs))
        except Exception as err:  # every error goes back to the caller, typed
            reply = ("error", err)
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:  # an unpicklable result or exception
            data = pickle.dumps(("error", RuntimeError(f"caffe2op: {name}: the result could not be sent back: {err}")))
        replies.write(data)
        replies.flush()


if __name__ == "__main__":
    main()
