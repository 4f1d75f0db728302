# SPDX-License-Identifier: BSD-3-Clause
"""Registry tables safe for concurrent readers and writers, and what every registry shares.

The schema, implementation and gradient registries are :class:`Table`
objects.  Writers take one lock and publish a new dictionary (copy on
write); readers use the dictionary published last without any lock, so a
reader iterating over a table never sees it change under it (no "dictionary
changed size during iteration") and never waits for a writer.

This module sits at the bottom of the import graph: ``schema``,
``registry`` and ``gradient`` import it, it imports none of them.  Each of
those registers a provider of the operator types it knows
(:func:`add_known_types_provider`), so that :func:`known_operator_types`
sees every registry without importing them.
"""

import threading

__all__ = []

# One lock for every table: registrations are rare, and one lock keeps the generation counter
# consistent with the tables it describes.
_WRITE_LOCK = threading.RLock()

# Bumped by every registration of an implementation or a schema: workspaces drop what they
# prepared before (a new engine or schema must take effect, as in Caffe2's CreateOperator).
_generation = 0

# Callables returning the operator types a registry knows; appended at import time.
_KNOWN_TYPE_PROVIDERS = []


class Table:
    """A name -> value mapping with locked, copy-on-write writers and lock-free snapshot readers.

    Parameters
    ----------
    what : str
        What the table holds, for error messages (``"schema"``, ``"CPU implementation"``).
    bumps_generation : bool, default True
        Whether a write changes :func:`registry_generation`.
    """

    def __init__(self, what, *, bumps_generation=True):
        self.what = what
        self._bumps_generation = bumps_generation
        self._data = {}

    def snapshot(self):
        """The current contents: a dict that no writer ever modifies (do not modify it either)."""
        return self._data

    def get(self, key, default=None):
        """The value under ``key``, or ``default``."""
        return self._data.get(key, default)

    def __contains__(self, key):
        return key in self._data

    def set(self, key, value, *, overwrite=True, where="register"):
        """Store ``value`` under ``key``.

        Raises
        ------
        ValueError
            If ``key`` is present and ``overwrite`` is False.
        """
        global _generation
        with _WRITE_LOCK:
            if not overwrite and key in self._data:
                raise ValueError(f"{where}: {key!r} already has a {self.what} (pass overwrite=True to replace it)")
            data = dict(self._data)
            data[key] = value
            self._data = data
            if self._bumps_generation:
                _generation += 1


def registry_generation():
    """A number that changes whenever an implementation or a schema is registered."""
    return _generation


def add_known_types_provider(provider):
    """Let a registry declare the operator types it knows (``provider()`` returns an iterable of str)."""
    with _WRITE_LOCK:
        _KNOWN_TYPE_PROVIDERS.append(provider)


def known_operator_types():
    """Every operator type known to any registry (implementations, schemas, gradients)."""
    known = set()
    for provider in list(_KNOWN_TYPE_PROVIDERS):
        known.update(provider())
    return known
