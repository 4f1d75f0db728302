# SPDX-License-Identifier: BSD-3-Clause
"""Caffe2's ``caffe2.python.test_util``: a ``unittest.TestCase`` that resets the workspace around each test."""

import unittest

import numpy as np

from . import workspace

__all__ = ["TestCase", "rand_array"]


def rand_array(*dims):
    """Uniform float32 values in [-0.5, 0.5) of shape ``dims`` (Caffe2's ``test_util.rand_array``).

    Parameters
    ----------
    *dims : int
        The shape.

    Returns
    -------
    numpy.ndarray
        The array.

    Examples
    --------
    >>> from caffe2op.compat import test_util
    >>> test_util.rand_array(2, 3).shape
    (2, 3)
    """
    return np.array(np.random.rand(*dims) - 0.5).astype(np.float32)


class TestCase(unittest.TestCase):
    """Caffe2's ``test_util.TestCase``: the current workspace is emptied before and after each test.

    Examples
    --------
    >>> from caffe2op.compat import test_util, workspace
    >>> class T(test_util.TestCase):
    ...     def test_empty(self):
    ...         self.assertEqual(workspace.Blobs(), [])
    >>> import unittest
    >>> unittest.TextTestRunner(stream=open("/dev/null", "w")).run(T("test_empty")).wasSuccessful()
    True
    """

    def runTest(self):  # noqa: N802 - lets the class be instantiated outside a test run
        """Nothing: subclasses define the tests.

        Examples
        --------
        >>> from caffe2op.compat import test_util
        >>> test_util.TestCase().runTest()
        """

    def setUp(self):
        """Empty the workspace before a test.

        Examples
        --------
        >>> from caffe2op.compat import test_util, workspace
        >>> workspace.FeedBlob("x", [1]); test_util.TestCase().setUp(); workspace.Blobs()
        True
        []
        """
        workspace.ResetWorkspace()

    def tearDown(self):
        """Empty the workspace after a test.

        Examples
        --------
        >>> from caffe2op.compat import test_util, workspace
        >>> workspace.FeedBlob("x", [1]); test_util.TestCase().tearDown(); workspace.Blobs()
        True
        []
        """
        workspace.ResetWorkspace()

    def assertReallyEqual(self, a, b, msg=None):  # noqa: N802 - Caffe2's name
        """Check ``a == b`` and ``b == a``, and that ``a != b`` is false both ways.

        Parameters
        ----------
        a, b : object
            The values.
        msg : str, optional
            Message on failure.

        Raises
        ------
        AssertionError
            If they differ either way.

        Examples
        --------
        >>> from caffe2op.compat import test_util
        >>> test_util.TestCase().assertReallyEqual([1], [1])
        """
        self.assertEqual(a, b, msg=msg)
        self.assertEqual(b, a, msg=msg)
        self.assertFalse(a != b, msg=msg)
        self.assertFalse(b != a, msg=msg)
