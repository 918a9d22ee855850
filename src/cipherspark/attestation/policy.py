"""Key-release policies: which verified TEE reports may receive a primary key's data keys.

A policy is JSON (see ``docs/attestation.md``)::

    {"version": 1,
     "tee_types": ["sgx"],                      # which TEEs; "simulated" must be named
     "tcb_status": ["UpToDate"],                # accepted DCAP TCB statuses (default)
     "max_evidence_age_seconds": 60,            # nonce (and simulated timestamp) age
     "sgx": {"mr_enclave": ["<hex>"], "mr_signer": ["<hex>"], "isv_prod_id": 1,
             "min_isv_svn": 1, "allow_debug": false},
     "tdx": {"mr_td": ["<hex>"], "rtmr0": ["<hex>"], "rtmr1": ["<hex>"], "rtmr2": ["<hex>"],
             "rtmr3": "any", "allow_debug": false},
     "simulated": {"platform_keys": ["<hex>"], "measurements": ["<hex>"]}}

Defaults fail closed: a TDX policy names every RTMR, as a non-empty allow-list or as the
explicit ``"any"`` (a missing or empty one is refused: it used to accept any value silently);
``Revoked`` is never an acceptable TCB status; an SGX policy by MRSIGNER without MRENCLAVE sets
``min_isv_svn`` to at least 1 (otherwise every enclave the signer ever signed, however old,
would be accepted).

:func:`cipherspark.deploy.policy_document` writes this format. Documents of 0.1.0's
``attestation-policy`` are still read: their ``app_id``, ``keys`` and ``operations`` are kept as
information, ``tee_types`` defaults to the sections present, and ``sgx.tcb_status`` /
``sgx.mr_signer`` as a single string are accepted. An empty or
missing policy denies everything. :meth:`AttestationPolicy.check` raises
:class:`~cipherspark.errors.PolicyDeniedError` with a reason code; it never returns a verdict.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

from cipherspark.attestation.evidence import TEE_TYPES, VerifiedReport
from cipherspark.errors import PolicyDeniedError, UsageError

__all__ = [
    "ANY_VALUE",
    "DEFAULT_MAX_EVIDENCE_AGE",
    "DEFAULT_TCB_STATUSES",
    "MAX_EVIDENCE_AGE_LIMIT",
    "POLICY_VERSION",
    "REFUSED_TCB_STATUSES",
    "AttestationPolicy",
    "RtmrAllowList",
    "SgxPolicy",
    "SimulatedPolicy",
    "TdxPolicy",
    "check_policy",
]

POLICY_VERSION = 1
DEFAULT_TCB_STATUSES = ("UpToDate",)
DEFAULT_MAX_EVIDENCE_AGE = 60
MAX_EVIDENCE_AGE_LIMIT = 300
_TCB_STATUSES = frozenset(
    {
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
    }
)
#: TCB statuses no policy may accept: the platform's attestation keys are revoked by Intel
#: (a quote from it proves nothing). Refused when a policy is parsed or built.
REFUSED_TCB_STATUSES: Final = frozenset({"Revoked"})
#: The explicit RTMR entry that accepts any value of that register.
ANY_VALUE: Final = "any"
#: One RTMR's rule: the allowed values (lower-case hex), or :data:`ANY_VALUE`.
RtmrAllowList: TypeAlias = tuple[str, ...] | Literal["any"]
_INFORMATIONAL = frozenset({"app_id", "keys", "operations"})


def _hexes(value: Any, where: str, nbytes: int) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise UsageError(f"policy {where} must be a list of hex strings")
    out = []
    for item in items:
        if not isinstance(item, str) or not re.fullmatch(f"[0-9a-fA-F]{{{2 * nbytes}}}", item):
            raise UsageError(
                f"policy {where}: {item!r} is not {nbytes} bytes of hex (a "
                "placeholder must be replaced by the real measurement)"
            )
        out.append(item.lower())
    return tuple(out)


def _int(
    value: Any, where: str, default: int | None, low: int = 0, high: int = 0xFFFF
) -> int | None:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise UsageError(f"policy {where} must be an integer from {low} to {high}")
    return value


def _bool(value: Any, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise UsageError(f"policy {where} must be true or false")
    return value


def _check_statuses(statuses: tuple[str, ...], where: str) -> None:
    refused = sorted(set(statuses) & REFUSED_TCB_STATUSES)
    if refused:
        raise UsageError(
            f"policy {where}: {refused[0]!r} is never an acceptable TCB status (Intel revoked "
            "the platform's attestation keys, so its quotes prove nothing)"
        )
    unknown = sorted(set(statuses) - _TCB_STATUSES)
    if unknown:
        raise UsageError(
            f"policy {where}: unknown TCB status {unknown[0]!r} (acceptable: "
            f"{', '.join(sorted(_TCB_STATUSES))})"
        )


def _statuses(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise UsageError(f"policy {where} must be a list of TCB status names")
    _check_statuses(tuple(value), where)
    return tuple(value)


def _rtmr_error(where: str, missing: bool) -> UsageError:
    # Missing and [] used to mean "any value": a policy pinning only MR_TD then accepted any
    # kernel, command line and application in the TD. Now "any" must be written out.
    return UsageError(
        f"policy {where} is {'missing' if missing else 'empty'}: list the values it may hold "
        f'(96 hex digits each), or write "{ANY_VALUE}" to accept any value'
    )


def _rtmr(value: Any, where: str) -> RtmrAllowList:
    if value is None or value == []:
        raise _rtmr_error(where, missing=value is None)
    if value == ANY_VALUE:
        return ANY_VALUE
    if not isinstance(value, list):
        raise UsageError(f'policy {where} must be a list of hex strings or "{ANY_VALUE}"')
    return _hexes(value, where, 48)


def _section(doc: dict[str, Any], name: str, allowed: set[str]) -> dict[str, Any]:
    section = doc.get(name)
    if not isinstance(section, dict):
        raise UsageError(f"policy section {name!r} must be an object")
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise UsageError(f"policy section {name!r} has unknown field {unknown[0]!r}")
    return section


def _deny(message: str, reason: str) -> PolicyDeniedError:
    return PolicyDeniedError(message, reason)


@dataclass(frozen=True)
class SgxPolicy:
    """SGX enclaves: allow-lists of MRENCLAVE and/or MRSIGNER, product id, minimum SVN."""

    mr_enclave: tuple[str, ...] = ()
    mr_signer: tuple[str, ...] = ()
    isv_prod_id: int | None = None
    min_isv_svn: int = 0
    allow_debug: bool = False
    tcb_status: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.mr_enclave and not self.mr_signer:
            raise UsageError("an sgx policy needs mr_enclave and/or mr_signer")
        if not self.mr_enclave and self.isv_prod_id is None:
            raise UsageError("an sgx policy by mr_signer alone also needs isv_prod_id")
        if not self.mr_enclave and self.min_isv_svn < 1:
            # By signer, the SVN is what tells a fixed enclave from its vulnerable
            # predecessors; 0 would accept every version the key ever signed.
            raise UsageError(
                "an sgx policy by mr_signer alone needs sgx.min_isv_svn of at least 1 (the "
                "lowest enclave security version to accept; 0 accepts every enclave the "
                "signer ever signed)"
            )
        if self.tcb_status is not None:
            _check_statuses(self.tcb_status, "sgx.tcb_status")

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> SgxPolicy:
        """Parse the ``sgx`` section."""
        s = _section(
            doc,
            "sgx",
            {"mr_enclave", "mr_signer", "isv_prod_id", "min_isv_svn", "allow_debug", "tcb_status"},
        )
        return cls(
            mr_enclave=_hexes(s.get("mr_enclave"), "sgx.mr_enclave", 32),
            mr_signer=_hexes(s.get("mr_signer"), "sgx.mr_signer", 32),
            isv_prod_id=_int(s.get("isv_prod_id"), "sgx.isv_prod_id", None),
            min_isv_svn=_int(s.get("min_isv_svn"), "sgx.min_isv_svn", 0) or 0,
            allow_debug=_bool(s.get("allow_debug"), "sgx.allow_debug"),
            tcb_status=_statuses(s.get("tcb_status"), "sgx.tcb_status"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        doc: dict[str, Any] = {
            "mr_enclave": list(self.mr_enclave),
            "mr_signer": list(self.mr_signer),
            "isv_prod_id": self.isv_prod_id,
            "min_isv_svn": self.min_isv_svn,
            "allow_debug": self.allow_debug,
        }
        if self.tcb_status is not None:
            doc["tcb_status"] = list(self.tcb_status)
        return doc

    def check(self, report: VerifiedReport) -> None:
        """Raise :class:`PolicyDeniedError` unless ``report`` matches."""
        if report.debug and not self.allow_debug:
            raise _deny("the enclave runs in debug mode (its memory is readable)", "debug")
        if self.mr_enclave and report.mr_enclave not in self.mr_enclave:
            raise _deny(f"MRENCLAVE {report.mr_enclave} is not allowed", "measurement")
        if self.mr_signer and report.mr_signer not in self.mr_signer:
            raise _deny(f"MRSIGNER {report.mr_signer} is not allowed", "measurement")
        if self.isv_prod_id is not None and report.isv_prod_id != self.isv_prod_id:
            raise _deny(
                f"ISV product id {report.isv_prod_id} is not {self.isv_prod_id}", "measurement"
            )
        if (report.isv_svn or 0) < self.min_isv_svn:
            raise _deny(f"ISV SVN {report.isv_svn} is below the minimum {self.min_isv_svn}", "svn")


@dataclass(frozen=True)
class TdxPolicy:
    """TDX trust domains: an allow-list of MRTD and, for each RTMR, one or :data:`ANY_VALUE`.

    ``rtmr`` holds RTMR0-3 in order; each is a non-empty tuple of allowed values or the
    explicit ``"any"``. An empty or missing entry is refused: the default is not "any".
    """

    mr_td: tuple[str, ...] = ()
    rtmr: tuple[RtmrAllowList, ...] = ()
    allow_debug: bool = False
    tcb_status: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.mr_td:
            raise UsageError("a tdx policy needs mr_td")
        if len(self.rtmr) > 4:
            raise UsageError("a tdx policy has four RTMR allow-lists, rtmr0 to rtmr3")
        for i in range(4):
            allowed = self.rtmr[i] if i < len(self.rtmr) else None
            if allowed == ANY_VALUE:
                continue
            if not allowed:
                raise _rtmr_error(f"tdx.rtmr{i}", missing=allowed is None)
            if not isinstance(allowed, tuple):  # a bare string would match by substring
                raise UsageError(f'policy tdx.rtmr{i} must be a tuple of hex strings or "any"')
        if self.tcb_status is not None:
            _check_statuses(self.tcb_status, "tdx.tcb_status")

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> TdxPolicy:
        """Parse the ``tdx`` section."""
        s = _section(
            doc, "tdx", {"mr_td", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "allow_debug", "tcb_status"}
        )
        return cls(
            mr_td=_hexes(s.get("mr_td"), "tdx.mr_td", 48),
            rtmr=tuple(_rtmr(s.get(f"rtmr{i}"), f"tdx.rtmr{i}") for i in range(4)),
            allow_debug=_bool(s.get("allow_debug"), "tdx.allow_debug"),
            tcb_status=_statuses(s.get("tcb_status"), "tdx.tcb_status"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        doc: dict[str, Any] = {"mr_td": list(self.mr_td), "allow_debug": self.allow_debug}
        doc.update({f"rtmr{i}": v if v == ANY_VALUE else list(v) for i, v in enumerate(self.rtmr)})
        if self.tcb_status is not None:
            doc["tcb_status"] = list(self.tcb_status)
        return doc

    def check(self, report: VerifiedReport) -> None:
        """Raise :class:`PolicyDeniedError` unless ``report`` matches."""
        if report.debug and not self.allow_debug:
            raise _deny("the trust domain runs in debug mode", "debug")
        if report.mr_td not in self.mr_td:
            raise _deny(f"MRTD {report.mr_td} is not allowed", "measurement")
        for i, allowed in enumerate(self.rtmr):
            if allowed == ANY_VALUE:
                continue
            value = report.rtmr[i] if i < len(report.rtmr) else None
            if value not in allowed:
                raise _deny(f"RTMR{i} {value} is not allowed", "measurement")


@dataclass(frozen=True)
class SimulatedPolicy:
    """The insecure ``simulated`` TEE: registered platform keys and code measurements."""

    platform_keys: tuple[str, ...] = ()
    measurements: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.platform_keys or not self.measurements:
            raise UsageError("a simulated policy needs platform_keys and measurements")

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> SimulatedPolicy:
        """Parse the ``simulated`` section."""
        s = _section(doc, "simulated", {"platform_keys", "measurements"})
        return cls(
            platform_keys=_hexes(s.get("platform_keys"), "simulated.platform_keys", 32),
            measurements=_hexes(s.get("measurements"), "simulated.measurements", 32),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"platform_keys": list(self.platform_keys), "measurements": list(self.measurements)}

    def check(self, report: VerifiedReport) -> None:
        """Raise :class:`PolicyDeniedError` unless the code measurement is listed."""
        if report.platform_key not in self.platform_keys:
            raise _deny("the simulated platform key is not registered", "signature")
        if report.measurement not in self.measurements:
            raise _deny(f"code measurement {report.measurement} is not allowed", "measurement")


@dataclass(frozen=True)
class AttestationPolicy:
    """One primary key's release policy. The default (empty) policy denies everything."""

    tee_types: tuple[str, ...] = ()
    tcb_status: tuple[str, ...] = DEFAULT_TCB_STATUSES
    max_evidence_age_seconds: int = DEFAULT_MAX_EVIDENCE_AGE
    sgx: SgxPolicy | None = None
    tdx: TdxPolicy | None = None
    simulated: SimulatedPolicy | None = None
    informational: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        for tee in self.tee_types:
            if tee not in TEE_TYPES:
                raise UsageError(f"policy tee_types: unknown TEE {tee!r}")
            if getattr(self, tee) is None:
                raise UsageError(f"policy allows {tee!r} but has no {tee!r} section")
        if not 1 <= self.max_evidence_age_seconds <= MAX_EVIDENCE_AGE_LIMIT:
            raise UsageError(
                f"policy max_evidence_age_seconds must be 1 to {MAX_EVIDENCE_AGE_LIMIT}"
            )
        _check_statuses(self.tcb_status, "tcb_status")

    @property
    def empty(self) -> bool:
        """True if no TEE type is allowed (the policy denies everything)."""
        return not self.tee_types

    @classmethod
    def from_dict(cls, doc: Any) -> AttestationPolicy:
        """Parse and validate a policy document; :class:`UsageError` says what is wrong."""
        if not isinstance(doc, dict):
            raise UsageError("a policy is a JSON object")
        if not doc:
            return cls()
        known = {"version", "tee_types", "tcb_status", "max_evidence_age_seconds", *TEE_TYPES}
        unknown = sorted(set(doc) - known - _INFORMATIONAL)
        if unknown:
            raise UsageError(f"policy has unknown field {unknown[0]!r}")
        if doc.get("version", POLICY_VERSION) != POLICY_VERSION:
            raise UsageError(f"policy version {doc.get('version')!r} is not {POLICY_VERSION}")
        tee_types = doc.get("tee_types")
        if tee_types is None:
            tee_types = [t for t in TEE_TYPES if t != "simulated" and doc.get(t) is not None]
        if not isinstance(tee_types, list) or not all(isinstance(t, str) for t in tee_types):
            raise UsageError("policy tee_types must be a list of TEE types")
        return cls(
            tee_types=tuple(dict.fromkeys(tee_types)),
            tcb_status=_statuses(doc.get("tcb_status"), "tcb_status") or DEFAULT_TCB_STATUSES,
            max_evidence_age_seconds=_int(
                doc.get("max_evidence_age_seconds"),
                "max_evidence_age_seconds",
                DEFAULT_MAX_EVIDENCE_AGE,
                1,
                MAX_EVIDENCE_AGE_LIMIT,
            )
            or DEFAULT_MAX_EVIDENCE_AGE,
            sgx=SgxPolicy.from_dict(doc) if doc.get("sgx") is not None else None,
            tdx=TdxPolicy.from_dict(doc) if doc.get("tdx") is not None else None,
            simulated=(
                SimulatedPolicy.from_dict(doc) if doc.get("simulated") is not None else None
            ),
            informational=tuple(
                (k, json.dumps(doc[k], sort_keys=True)) for k in sorted(_INFORMATIONAL & set(doc))
            ),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> AttestationPolicy:
        """Parse a JSON policy."""
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"the policy is not valid JSON: {exc}") from exc
        return cls.from_dict(doc)

    def to_dict(self) -> dict[str, Any]:
        """The normalised JSON form (what the KMS stores)."""
        doc: dict[str, Any] = {
            "version": POLICY_VERSION,
            "tee_types": list(self.tee_types),
            "tcb_status": list(self.tcb_status),
            "max_evidence_age_seconds": self.max_evidence_age_seconds,
        }
        for name in TEE_TYPES:
            section = getattr(self, name)
            if section is not None:
                doc[name] = section.to_dict()
        for key, value in self.informational:
            doc[key] = json.loads(value)
        return doc

    def to_json(self) -> str:
        """Canonical JSON."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def check_tee(self, tee: str) -> None:
        """Raise unless evidence of TEE type ``tee`` may be considered at all."""
        if self.empty:
            raise _deny("the key has no release policy (an empty policy denies)", "no_policy")
        if tee not in self.tee_types:
            raise _deny(
                f"the policy does not accept {tee!r} evidence (accepts: "
                f"{', '.join(self.tee_types)})",
                "tee_type",
            )

    def check(self, report: VerifiedReport) -> None:
        """Raise :class:`PolicyDeniedError` (with its reason) unless ``report`` is accepted."""
        self.check_tee(report.tee)
        section: SgxPolicy | TdxPolicy | SimulatedPolicy | None = getattr(self, report.tee)
        assert section is not None  # guaranteed by __post_init__ and check_tee
        section.check(report)
        if report.tee in ("sgx", "tdx"):
            accepted = getattr(section, "tcb_status", None) or self.tcb_status
            # REFUSED_TCB_STATUSES again here: no policy object, however built, releases a key
            # to a platform whose attestation keys are revoked.
            if report.tcb_status not in accepted or report.tcb_status in REFUSED_TCB_STATUSES:
                raise _deny(
                    f"TCB status {report.tcb_status} is not accepted (accepted: "
                    f"{', '.join(accepted)})",
                    "tcb_status",
                )


def check_policy(policy: AttestationPolicy | None, report: VerifiedReport) -> None:
    """:meth:`AttestationPolicy.check`, where a missing policy denies (``no_policy``)."""
    if policy is None:
        raise _deny("the key has no release policy", "no_policy")
    policy.check(report)
