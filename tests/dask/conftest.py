# SPDX-License-Identifier: BSD-3-Clause
"""A real ``distributed.LocalCluster`` for the caffe2op.dask tests: 2 worker processes on the loopback interface.

One cluster for the whole session (starting one takes seconds).  Its workers
are memory-limited to :data:`WORKER_MEMORY_LIMIT`, far below the largest
table the tests stream through them.
"""

import pytest

#: Memory limit of each worker (the nanny restarts a worker that goes over 95% of it).
WORKER_MEMORY_LIMIT = 256 * 2**20


@pytest.fixture(scope="session")
def client():
    """A ``distributed.Client`` of a LocalCluster with 2 single-threaded worker processes on 127.0.0.1."""
    from tests.dask._require import require_dask

    require_dask()
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        # The scheduler's HTTP endpoints on a free loopback port: 8787 stays free for the guide's cluster.
        dashboard_address="127.0.0.1:0",
        memory_limit=WORKER_MEMORY_LIMIT,
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
