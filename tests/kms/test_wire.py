"""The wire contract (kms/_wire.py) and the typed attestation denial reason (errors.py).

In process: every row of the error table answered by the server's side comes back as the same
error type from the client's side; answers outside the table are KMS errors, never usage errors;
a denial's reason survives pickling and a printed traceback.
"""

from __future__ import annotations

import pickle
import traceback

import pytest

from cipherspark import errors
from cipherspark.errors import (
    AttestationError,
    CipherSparkError,
    CredentialsError,
    DenialReason,
    IntegrityError,
    KeyNotFoundError,
    KeyStateError,
    KmsError,
    KmsServerError,
    PermissionDeniedError,
    PolicyDeniedError,
    RateLimitedError,
    UsageError,
)
from cipherspark.kms import KeyInfo, _wire

URL = "https://kms.example:8443"


def _raised(
    status: int,
    doc: dict[str, object],
    *,
    retry_after: float | None = None,
    vault_bad_request: type[CipherSparkError] = KmsError,
) -> CipherSparkError:
    with pytest.raises(CipherSparkError) as info:
        _wire.raise_for_answer(
            status,
            doc,
            url=URL,
            what="testing",
            retry_after=retry_after,
            vault_bad_request=vault_bad_request,
        )
    return info.value


# -- the attestation denial reason ------------------------------------------------------------


@pytest.mark.parametrize("kind", [AttestationError, PolicyDeniedError])
@pytest.mark.parametrize("reason", list(DenialReason))
def test_a_denial_keeps_its_reason_through_pickling(
    kind: type[AttestationError], reason: DenialReason
) -> None:
    # What crosses a process boundary by pickle (Spark's Python workers, multiprocessing).
    denied = kind(f"denied for {reason.value}", reason.value)
    back = pickle.loads(pickle.dumps(denied))
    assert type(back) is kind
    assert back.reason is reason and isinstance(back.reason, DenialReason)
    assert str(back) == str(denied)
    assert back.__notes__ == denied.__notes__  # not doubled by the rebuild


def test_a_denial_reason_is_read_back_from_a_printed_traceback() -> None:
    # What a Spark driver sees of a Python worker's failure: the printed exception only.
    try:
        raise PolicyDeniedError("MRENCLAVE 00 is not allowed", "measurement")
    except PolicyDeniedError as exc:
        printed = "".join(traceback.format_exception(exc))
    assert "cipherspark.errors.PolicyDeniedError: MRENCLAVE 00 is not allowed\n" in printed
    assert AttestationError.reason_in(printed) is DenialReason.MEASUREMENT
    assert AttestationError.reason_in("cipherspark.errors.IntegrityError: bad tag") is None
    assert AttestationError.reason_in("attestation denial reason: from_the_future") is None


def test_reasons_are_the_strings_they_always_were() -> None:
    denied = PolicyDeniedError("no policy", "no_policy")
    assert denied.reason == "no_policy" and f"{denied.reason}" == "no_policy"
    assert AttestationError("unverifiable").reason is DenialReason.SIGNATURE
    with pytest.raises(ValueError):
        AttestationError("bad", "not-a-reason")


def test_cluster_error_is_in_the_one_tree() -> None:
    assert issubclass(errors.ClusterError, CipherSparkError)
    assert "ClusterError" in errors.__all__ and "DenialReason" in errors.__all__


# -- one table, both directions -----------------------------------------------------------------


@pytest.mark.parametrize("row", _wire.ERRORS, ids=lambda row: row.code)
def test_every_row_round_trips(row: _wire.WireError) -> None:
    if issubclass(row.answers, AttestationError):
        exc: CipherSparkError = row.answers("evidence refused", "binding")
    else:
        exc = row.answers("the service said no")
    answer = _wire.error_answer(exc)
    assert (answer.status, answer.code) == (row.status, row.code)
    body = answer.body()
    assert body["code"] == row.code
    raised = _raised(answer.status, body)
    assert type(raised) is row.raises
    if isinstance(raised, AttestationError):
        assert body["reason"] == "binding" and raised.reason is DenialReason.BINDING
    if row.status == 401:
        assert "rejected the credentials" in str(raised)
    else:
        assert str(raised) == f"testing: {exc}"


def test_an_unexpected_error_is_a_500_without_detail() -> None:
    answer = _wire.error_answer(errors.JobError("a secret detail"))
    assert (answer.status, answer.code) == (500, "internal")
    assert "secret" not in answer.message
    assert isinstance(_raised(500, answer.body()), KmsServerError)


@pytest.mark.parametrize(
    ("status", "doc"),
    [
        (413, {"error": "request body larger than 65536 bytes", "code": "body_too_large"}),
        (422, {"error": "wrapped: Input should be a valid string", "code": "invalid_field"}),
        (400, {"error": "the request body is not valid JSON", "code": "malformed_json"}),
        (404, {"detail": "Not Found"}),  # no such route (an older server)
        (403, {}),  # a proxy in the way
        (409, {"error": "?", "code": "key_not_found"}),  # a known code with the wrong status
        (418, {"error": "I'm a teapot", "code": "teapot"}),
    ],
)
def test_unknown_4xx_answers_are_kms_errors_not_usage_errors(
    status: int, doc: dict[str, object]
) -> None:
    raised = _raised(status, doc)
    assert type(raised) is KmsError
    assert not isinstance(raised, UsageError) and raised.exit_code == 1
    assert f"({status})" in str(raised)


def test_credentials_server_failures_and_successes() -> None:
    assert isinstance(_raised(401, {}), CredentialsError)
    assert isinstance(_raised(503, {"error": "x"}), KmsServerError)
    assert isinstance(_raised(302, {}), KmsServerError)
    _wire.raise_for_answer(200, {"anything": 1}, url=URL, what="testing")


def test_an_unknown_denial_reason_from_the_server_is_the_general_one() -> None:
    raised = _raised(403, {"error": "no", "code": "attestation_denied", "reason": "new_kind"})
    assert isinstance(raised, PolicyDeniedError) and raised.reason is DenialReason.SIGNATURE


# -- Vault-shaped answers (the Transit routes) and the throttle ---------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (403, PermissionDeniedError),
        (404, KeyNotFoundError),
        (409, KeyStateError),
        (401, CredentialsError),
        (500, KmsServerError),
        (422, KmsError),
        (400, KmsError),
    ],
)
def test_a_vault_shaped_error_is_read_by_its_status(
    status: int, kind: type[CipherSparkError]
) -> None:
    raised = _raised(status, {"errors": ["the service said no"]})
    assert type(raised) is kind
    if status in (403, 404, 409, 400, 422):
        assert "the service said no" in str(raised)


def test_a_vault_shaped_400_is_what_the_caller_says_and_only_that() -> None:
    # Transit decrypt: the ciphertext was refused (malformed or unauthentic).
    assert (
        type(
            _raised(
                400,
                {"errors": ["ciphertext does not authenticate"]},
                vault_bad_request=IntegrityError,
            )
        )
        is IntegrityError
    )
    # A native body keeps its code's meaning, whatever the caller expects of Vault's.
    native = _raised(
        400,
        {"error": "the request body is not valid JSON", "code": "malformed_json"},
        vault_bad_request=IntegrityError,
    )
    assert type(native) is KmsError
    assert type(_raised(400, {"errors": []}, vault_bad_request=IntegrityError)) is IntegrityError
    assert type(_raised(403, {}, vault_bad_request=IntegrityError)) is KmsError


@pytest.mark.parametrize(
    "doc",
    [
        {"error": "too many failed logins; retry in 7 s", "code": "throttled"},
        {"errors": ["too many failed logins; retry in 7 s"]},
        {},
    ],
)
def test_429_is_rate_limited_with_its_retry_after(doc: dict[str, object]) -> None:
    raised = _raised(429, doc, retry_after=6.2)
    assert type(raised) is RateLimitedError and isinstance(raised, KmsError)
    assert raised.retry_after == 6.2 and raised.exit_code == 1
    assert str(raised) == (
        f"testing: the KMS at {URL} is throttling logins from this source or "
        "app id after too many failed logins; retry in 7 s"
    )
    unknown = _raised(429, doc)
    assert isinstance(unknown, RateLimitedError) and unknown.retry_after is None
    assert str(unknown).endswith("; retry later")


def test_retry_after_is_seconds_or_nothing() -> None:
    assert _wire.retry_after_seconds("7") == 7.0
    assert _wire.retry_after_seconds(" 1.5 ") == 1.5
    assert _wire.retry_after_seconds("0") == 0.0
    for bad in (None, "", "-1", "nan", "inf", "soon", "Wed, 21 Oct 2015 07:28:00 GMT"):
        assert _wire.retry_after_seconds(bad) is None, bad


def test_a_rate_limit_keeps_its_retry_after_through_pickling() -> None:
    limited = RateLimitedError("throttled", 12.0)
    back = pickle.loads(pickle.dumps(limited))
    assert type(back) is RateLimitedError and back.retry_after == 12.0
    assert str(back) == "throttled" and RateLimitedError("x").retry_after is None
    assert "RateLimitedError" in errors.__all__


# -- base64 and typed answers -------------------------------------------------------------------


def test_base64_is_strict() -> None:
    assert _wire.b64decode(_wire.b64encode(b"\x00\xffkey")) == b"\x00\xffkey"
    for bad in ("not base64!", "AAA", "AA-_", 12, None):
        with pytest.raises(ValueError):
            _wire.b64decode(bad)


def test_key_descriptions_are_typed() -> None:
    doc = {
        "name": "k",
        "version": 2,
        "created": "2030-01-01T00:00:00+00:00",
        "min_decryption_version": 1,
        "enabled": True,
        "deletion_date": None,
    }
    described = _wire.key_description(doc)
    assert (described.name, described.version, described.enabled) == ("k", 2, True)
    assert described["min_decryption_version"] == 1 and described["deletion_date"] is None
    with pytest.raises(KeyError):
        described["sealed"]
    assert _wire.key_info(doc) == KeyInfo("k", 2, "2030-01-01T00:00:00+00:00")
    for broken in (
        {**doc, "enabled": "yes"},
        {k: v for k, v in doc.items() if k != "enabled"},
        {**doc, "version": "two"},
    ):
        with pytest.raises(KmsError, match="malformed key description"):
            _wire.key_description(broken)


def test_admin_answers_are_typed() -> None:
    app = _wire.new_app({"app_id": "app-1", "api_key": "secret", "vault_token": "app-1.secret"})
    assert app.app_id == "app-1" and "secret" not in repr(app)
    platform = _wire.simulated_platform({"public_key": "ab" * 32, "label": "ci", "created": "2030"})
    assert platform.label == "ci"
    broken: object
    for broken in (None, [], {"public_key": "ab" * 32}):
        with pytest.raises(KmsError, match="simulated-platform record"):
            _wire.simulated_platform(broken)
    with pytest.raises(KmsError, match="app credentials"):
        _wire.new_app({"app_id": "app-1"})
