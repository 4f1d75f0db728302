# SPDX-License-Identifier: BSD-3-Clause
"""SparseNormalize and Float16SparseNormalize: schemas and gradient registration (none: a projection)."""

from ...gradient import should_not_do_gradient
from ...schema import Argument, OpSchema, non_negative_finite, register_schema

_INPUTS = [
    ("param", "Embedding table, updated in place; rows are ``param.reshape(len(param), -1)``."),
    ("indices", "Rows to normalise (int32 or int64, any shape, flattened; repeats allowed)."),
    ("grad", "Optional, ignored: kept for compatibility with Caffe2 nets that pass the sparse gradient."),
]
_OUTPUTS = [("param", "The same blob as input 0 (enforced).")]
_ARGS = [
    Argument(
        "use_max_norm",
        bool,
        default=True,
        doc="True: only rows with norm above ``norm`` are scaled down (max-norm). "
        "False: every selected row is scaled to norm ``norm`` (constant-norm).",
    ),
    Argument(
        "norm",
        float,
        default=1.0,
        validator=non_negative_finite,
        doc="Target L2 norm of the rows (finite, >= 0).",
    ),
]
_FORMULA = (
    r"n_i = \lVert W_i \rVert_2,\qquad "
    r"W_i \leftarrow \begin{cases} W_i & \text{if } \mathtt{use\_max\_norm} \text{ and } n_i \le \mathrm{norm}\\"
    r" W_i \cdot \dfrac{\mathrm{norm}}{n_i + 10^{-12}} & \text{otherwise}\end{cases}"
)
_EXAMPLE = """\
>>> import numpy as np, caffe2op
>>> w = np.array([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0]], dtype=np.float32)
>>> caffe2op.sparse_normalize(w, np.array([0, 1]), norm=1.0)
array([[0.6, 0.8],
       [0.3, 0.4],
       [6. , 8. ]], dtype=float32)
"""

SPARSE_NORMALIZE_SCHEMA = register_schema(
    OpSchema(
        "SparseNormalize",
        num_inputs=(2, 3),
        num_outputs=1,
        inputs=_INPUTS,
        outputs=_OUTPUTS,
        args=_ARGS,
        enforce_one_to_one_inplace=True,
        doc="Scale the rows of ``param`` selected by ``indices`` to L2 norm ``norm``, in place "
        "(max-norm mode: only the rows above it).  Each distinct row is normalised once, "
        "whatever the number of threads; indices are checked before any row is written.  "
        "float32 and float64 tables (float16 ones run the Float16SparseNormalize kernel).  "
        "No gradient: asking for one raises.",
        formula=_FORMULA,
        example=_EXAMPLE,
    )
)

FLOAT16_SPARSE_NORMALIZE_SCHEMA = register_schema(
    OpSchema(
        "Float16SparseNormalize",
        num_inputs=(2, 3),
        num_outputs=1,
        inputs=[("param", "float16 embedding table, updated in place.")] + _INPUTS[1:],
        outputs=_OUTPUTS,
        args=_ARGS,
        enforce_one_to_one_inplace=True,
        doc="SparseNormalize for float16 tables: norms and scaling are computed in float32 and "
        "each element is rounded back to float16 (round to nearest even).  No gradient: asking "
        "for one raises.",
        formula=_FORMULA,
        example="""\
>>> import numpy as np, caffe2op
>>> w = np.array([[3.0, 4.0], [0.3, 0.4]], dtype=np.float16)
>>> caffe2op.sparse_normalize(w, [0]).dtype
dtype('float16')
>>> w[0].tolist()  # 0.6 and 0.8, rounded to float16
[0.60009765625, 0.7998046875]
""",
    )
)


# A projection applied after the optimizer step, never differentiated (as in Caffe2).
should_not_do_gradient("SparseNormalize")
should_not_do_gradient("Float16SparseNormalize")
