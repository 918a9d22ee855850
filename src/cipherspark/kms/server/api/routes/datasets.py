"""The dataset registry of the calling app (:mod:`cipherspark.kms.server.registry`): look a
record up by location or find a dataset's records, register one by compare-and-swap, move one.

Any credential of the app looks records up; writing one needs a credential that may wrap data
keys under the record's key, and the registration proof made with the dataset's data key.
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from cipherspark.errors import UsageError
from cipherspark.kms import _wire
from cipherspark.kms.server.api.deps import Caller, RequestId, Service, decode_field
from cipherspark.kms.server.api.errors import error_response
from cipherspark.kms.server.api.models import (
    MAX_LOCATION,
    DatasetBody,
    DatasetListResponse,
    DatasetMoveRequest,
    DatasetRegisterRequest,
    check_location,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


def _invalid(field: str, message: str) -> RequestValidationError:
    # The same 422 answer a body field gets; the value itself is not echoed.
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", field), "msg": message}]
    )


@router.get(
    "",
    response_model=None,
    responses={
        200: {"description": "the record at `location`, or `{datasets: [...]}` for `dataset_id`"},
        404: {"description": "nothing is registered at `location` (code `dataset_not_found`)"},
    },
)
async def look_up(
    request: Request,
    service: Service,
    request_id: RequestId,
    who: Caller,
    location: Annotated[str | None, Query(min_length=1, max_length=MAX_LOCATION)] = None,
    dataset_id: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")] = None,
) -> Response:
    """``?location=PATH``: the record there (404 if none); ``?dataset_id=ID``: every record of
    that dataset, by location. Exactly one of the two."""
    if (location is None) == (dataset_id is None):
        raise UsageError("ask for the dataset registry with exactly one of location or dataset_id")
    if dataset_id is not None:
        found = service.find_dataset(who, dataset_id, request_id)
        answer = DatasetListResponse(datasets=[DatasetBody.of(r) for r in found])
        return JSONResponse(answer.model_dump())
    assert location is not None
    try:
        check_location(location)
    except ValueError as exc:
        raise _invalid("location", str(exc)) from exc
    record = service.dataset_at(who, location, request_id)
    if record is None:
        return error_response(
            request.url.path, _wire.DATASET_NOT_FOUND, "no dataset is registered at this location"
        )
    return JSONResponse(DatasetBody.of(record).model_dump())


@router.put("", status_code=204)
async def register(
    body: DatasetRegisterRequest, service: Service, request_id: RequestId, who: Caller
) -> Response:
    """Compare-and-swap: ``record`` becomes current if ``previous`` is the record there now
    (204); 409 ``dataset_conflict`` if not, or if the dataset would not move forward; 400
    ``integrity`` for a wrong wrapped key or proof; 403 for a credential that may not."""
    wrapped = decode_field(body.wrapped_key, "wrapped_key")
    proof = decode_field(body.proof, "proof")
    record = body.record.record()
    previous = None if body.previous is None else body.previous.record()

    def run() -> None:
        service.register_dataset(
            who,
            record,
            previous=previous,
            wrapped_key=wrapped,
            proof=proof,
            request_id=request_id,
        )

    # A commit waits for fsync: off the event loop.
    await anyio.to_thread.run_sync(run)
    return Response(status_code=204)


@router.post("/move", status_code=204)
async def move(
    body: DatasetMoveRequest, service: Service, request_id: RequestId, who: Caller
) -> Response:
    """Move the record ``source`` to ``target.location`` in one step (204); the refusals of
    ``PUT``, and 409 if something is registered at the target."""
    wrapped = decode_field(body.wrapped_key, "wrapped_key")
    proof = decode_field(body.proof, "proof")
    source, target = body.source.record(), body.target.record()

    def run() -> None:
        service.move_dataset(
            who, source, target, wrapped_key=wrapped, proof=proof, request_id=request_id
        )

    await anyio.to_thread.run_sync(run)
    return Response(status_code=204)
