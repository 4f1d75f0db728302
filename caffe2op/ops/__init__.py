# SPDX-License-Identifier: BSD-3-Clause
"""The built-in operators, one module each: schema, implementations and functional form side by side.

Importing this package registers every built-in schema and implementation.
The functional forms are exported by the top-level :mod:`caffe2op` package.
"""

from . import (  # noqa: F401
    concat,
    constant_fill,
    copy,
    copy_on_device_like,
    normalize,
    sparse_normalize,
    split,
    stop_gradient,
    sum,
    zero_gradient,
)
