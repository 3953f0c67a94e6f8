"""Fan a campaign's chunks out to a Dask distributed cluster and stream the results back.

Why Dask distributed rather than Ray: it is pure Python (pip-installs anywhere the fuzzer
does, no native object store or dashboard daemons), a scheduler is one command
(`dask scheduler`, workers: `dask worker tcp://HOST:8786`), and `Client.map` over picklable
chunk descriptions is exactly the shape of this work: independent, small inputs, small
outputs. The workers run the same `runner.run_chunk` as local processes, so a seeded run
gathers the same counts on a laptop and on a cluster.
"""

from __future__ import annotations

from typing import Iterator

from ..errors import StepperError
from .runner import Chunk, ChunkResult, run_chunk


class ClusterError(StepperError):
    """The cluster cannot be reached or Dask is not installed."""


def run_chunks(address: str, chunks: list[Chunk]) -> Iterator[ChunkResult]:
    """Run every chunk on the cluster at `address`, yielding results as they complete."""
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        raise ClusterError("--cluster needs Dask distributed: pip install 'stepper[cluster]' "
                           "(or 'dask[distributed]')") from None
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as e:
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {e}") from None
    try:
        futures = client.map(run_chunk, chunks, pure=False)
        for future in as_completed(futures):
            yield future.result()
    finally:
        client.close()
