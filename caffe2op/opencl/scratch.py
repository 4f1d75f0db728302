# SPDX-License-Identifier: BSD-3-Clause
"""Scratch buffers of the OpenCL kernels: one set per command queue, grown when needed, reused call after call."""

import os
import threading
import weakref

from . import backend
from .devices import require_pyopencl


class QueueScratch:
    """Named scratch buffers of each command queue, grown when needed and reused call after call.

    Keyed by the queue's context (weakly: an entry never keeps a context
    alive) and the queue's handle; a context keeps the buffers of its newest
    few queues.  Whoever enqueues on a queue's buffers holds :attr:`lock`
    from the first command to the last, and makes its first command wait
    for the previous call's last one (:attr:`ScratchEntry.last_event`): two
    threads sharing a queue, or an out-of-order queue, never interleave
    their uses of the buffers.  After ``fork()`` every buffer is dropped
    (the child cannot use its parent's contexts) and the lock is made anew.

    Parameters
    ----------
    *names : str
        The buffers' names: attributes of each :class:`ScratchEntry`.
    """

    _QUEUES_PER_CONTEXT = 8

    def __init__(self, *names):
        self.lock = threading.Lock()
        self._names = names
        self._entries = weakref.WeakKeyDictionary()  # context -> {queue handle: ScratchEntry}
        backend._AFTER_FORK.append(self.forget)
        # Another thread of the parent may have held the lock while forking.
        os.register_at_fork(after_in_child=self.lock._at_fork_reinit)

    def entry(self, queue, **nbytes):
        """The :class:`ScratchEntry` of ``queue``, each named buffer at least ``nbytes[name]`` bytes.

        Call it under :attr:`lock`.
        """
        per_queue = self._entries.setdefault(queue.context, {})
        entry = per_queue.get(queue.int_ptr)
        if entry is None:
            if len(per_queue) >= self._QUEUES_PER_CONTEXT:
                per_queue.pop(next(iter(per_queue)))  # queues come and go: keep the newest few
            entry = per_queue[queue.int_ptr] = ScratchEntry(self._names)
        for name, size in nbytes.items():
            if entry.nbytes[name] < size:
                cl = require_pyopencl()
                setattr(entry, name, cl.Buffer(queue.context, cl.mem_flags.READ_WRITE, size))
                entry.nbytes[name] = size
        return entry

    def forget(self, inherited):
        """After fork (or a re-probe): drop every buffer, keeping them alive in ``inherited``."""
        inherited.append(list(self._entries.items()))
        self._entries.clear()


class ScratchEntry:
    """One queue's scratch buffers (an attribute each, None until sized), their sizes and the last event on them.

    Parameters
    ----------
    names : iterable of str
        The buffers' names.
    """

    def __init__(self, names):
        self.nbytes = {}
        for name in names:
            setattr(self, name, None)
            self.nbytes[name] = 0
        self.last_event = None
