"""Private compiled CPU kernels of caffe2op (built from ``pyx/``).

Nothing here validates its inputs: the Python layer in ``caffe2op.ops``
checks dtypes, shapes and indices once, before any kernel runs.
"""
