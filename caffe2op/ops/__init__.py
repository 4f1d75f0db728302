# SPDX-License-Identifier: BSD-3-Clause
"""The built-in operators, one module each: schema, implementations and functional form side by side.

Importing this package registers every built-in schema and implementation.
The functional forms are exported by the top-level :mod:`caffe2op` package.
"""

from . import concat, constant_fill, copy, normalize, sparse_normalize, stop_gradient, sum, zero_gradient  # noqa: F401
