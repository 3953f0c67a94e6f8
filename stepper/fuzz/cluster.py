"""Fan a campaign's chunks out to a Dask distributed cluster and stream the results back.

Why Dask distributed rather than Ray: it is pure Python (pip-installs anywhere the fuzzer
does, no native object store or dashboard daemons), a scheduler is one command
(`dask scheduler`, workers: `dask worker tcp://HOST:8786`), and `Client.map` over picklable
chunk descriptions is exactly the shape of this work: independent, small inputs, small
outputs. The workers run the same `runner.run_chunk` as local processes, so a seeded run
gathers the same counts on a laptop and on a cluster.

Trust: Dask moves work and results as pickles, and unpickling runs code. The client sends
pickled functions the workers run, and unpickles what comes back, so whoever answers at the
address can run code as the user of stepper, and whoever can submit to the scheduler can run
code on the workers. Hence a `tls://` address (Dask's mutual TLS: each end proves itself with a
certificate signed by the CA given) is the normal case, and a plain `tcp://` address, loopback
included (every user of the host can connect to it), is refused unless the user says
`--insecure`. See docs/security.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import StepperError

if TYPE_CHECKING:  # the runner imports this module, never the other way round
    from .runner import Chunk, ChunkResult


class ClusterError(StepperError):
    """The cluster cannot be reached or Dask is not installed."""


#: Address schemes whose connections Dask encrypts and authenticates with certificates.
SECURE_SCHEMES = ("tls", "wss")


@dataclass(frozen=True)
class Trust:
    """How stepper may talk to a cluster: certificate files for TLS, or plainly if `insecure`."""

    ca_file: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure: bool = False

    def files(self) -> dict[str, str | None]:
        return {"--tls-ca-file": self.ca_file, "--tls-cert": self.cert, "--tls-key": self.key}


def check(address: str | None, trust: Trust) -> None:
    """Refuse, before any work, an address and options that would talk to a cluster without
    knowing who answers (see the module doc), or certificate options that cannot be used."""
    given = [option for option, value in trust.files().items() if value]
    if address is None:
        if given or trust.insecure:
            raise ClusterError(f"{(given or ['--insecure'])[0]} needs --cluster")
        return
    scheme = address.split("://", 1)[0] if "://" in address else "tcp"
    if scheme in SECURE_SCHEMES:
        missing = [option for option, value in trust.files().items() if not value]
        if missing:
            raise ClusterError(f"--cluster {address} needs {', '.join(missing)} (the CA that "
                               f"signed the scheduler's certificate, and this client's own)")
        for option, path in trust.files().items():
            if not os.path.isfile(path):
                raise ClusterError(f"{option} {path}: no such file")
        return
    if given:
        raise ClusterError(f"{given[0]} needs a tls:// cluster address, not {address}")
    if not trust.insecure:
        raise ClusterError(f"--cluster {address} is not encrypted or authenticated: anyone who "
                           f"can reach it (other users of this host included) can run code on "
                           f"either side; use a tls:// address with --tls-ca-file, --tls-cert "
                           f"and --tls-key, or add --insecure")


def run_chunks(address: str, chunks: list[Chunk], work: Callable[[Chunk], ChunkResult],
               trust: Trust = Trust()) -> Iterator[ChunkResult]:
    """Run `work` (the runner's run_chunk) on every chunk on the cluster at `address`
    (checked with `check` first), yielding results as they complete."""
    check(address, trust)
    try:
        from dask.distributed import Client, as_completed
        from distributed.security import Security
    except ImportError:
        raise ClusterError("--cluster needs Dask distributed: pip install 'stepper[cluster]' "
                           "(or 'dask[distributed]')") from None
    security = None
    if trust.ca_file:
        security = Security(tls_ca_file=trust.ca_file, tls_client_cert=trust.cert,
                            tls_client_key=trust.key, require_encryption=True)
    try:
        client = Client(address, timeout="10s", security=security)
    except (OSError, TimeoutError, ValueError) as e:
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {e}") from None
    try:
        futures = client.map(work, chunks, pure=False)
        for future in as_completed(futures):
            yield future.result()
    finally:
        client.close()
