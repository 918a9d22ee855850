"""The KMS server's HTTP layer, assembled by :func:`cipherspark.kms.server.app.create_app`.

* ``routes/``: one :class:`fastapi.APIRouter` per resource — ``keys``, ``datakeys``,
  ``attestation``, ``credentials`` (an owner's workload credentials), ``admin``, ``transit``,
  ``ops`` (health and metrics);
* :mod:`~cipherspark.kms.server.api.models`: every request and response body;
* :mod:`~cipherspark.kms.server.api.deps`: the dependencies (service, request id, caller, admin,
  the failed-login throttle);
* :mod:`~cipherspark.kms.server.api.errors`: error answers by the wire contract;
* :mod:`~cipherspark.kms.server.api.limits`: the ASGI layer (request ids, body limit);
* :mod:`~cipherspark.kms.server.api.lean`: the lean route of the hot data-key endpoints.
"""

from __future__ import annotations

__all__: list[str] = []
