"""Attested key release in the service: release policies, nonces, and the attested unwrap.

Setting a policy needs the key's owner credential or the operator (admin token), and its audit
line carries the old and new policies' digests (:func:`policy_digest`). Once a key has a policy
(any stored one, even ``{}``), it is *attested-only*: see :mod:`.permissions`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from cipherspark.attestation.dcap import DcapVerifier
from cipherspark.attestation.evidence import Evidence
from cipherspark.attestation.policy import DEFAULT_MAX_EVIDENCE_AGE, AttestationPolicy
from cipherspark.attestation.protocol import check_binding, seal_to
from cipherspark.attestation.verify import verify_evidence
from cipherspark.errors import AttestationError, UsageError
from cipherspark.kms.server import keyring
from cipherspark.kms.server._audited import Outcome, digest
from cipherspark.kms.server._core import ServiceCore
from cipherspark.kms.server.nonces import NonceStore
from cipherspark.kms.server.permissions import Access, Principal
from cipherspark.kms.server.records import KeyRecord

__all__ = ["ReleaseEvidence", "ReleaseOperations", "policy_digest"]


@dataclass(frozen=True)
class ReleaseEvidence:
    """What a worker presents for every attested release: the nonce it was given, its TEE's
    evidence (``tee``, ``quote``), the public key the answer is sealed to (bound into the
    evidence) and, optionally, DCAP collateral (ignored where the server has a PCCS)."""

    nonce: bytes
    tee: str
    quote: bytes
    public_key: bytes
    collateral: str | None = None


def policy_digest(policy_json: str | None) -> str:
    """``sha256:HEX`` of a policy's canonical JSON (keys sorted, no spaces, ASCII), or
    ``none`` when there is no policy."""
    if policy_json is None:
        return "none"
    canonical = json.dumps(json.loads(policy_json), sort_keys=True, separators=(",", ":"))
    return digest(canonical)


class ReleaseOperations(ServiceCore):
    """Policies, attestation nonces and the attested unwrap."""

    _dcap: DcapVerifier
    _attestation_clock: Callable[[], float]
    _nonces: NonceStore

    def _init_release(
        self,
        dcap: DcapVerifier | None,
        attestation_clock: Callable[[], float] = time.time,
        nonces: NonceStore | None = None,
    ) -> None:
        # Attested release: DCAP collateral source and the time evidence is judged at.
        self._dcap = dcap or DcapVerifier(clock=attestation_clock)
        self._attestation_clock = attestation_clock
        self._nonces = nonces or NonceStore()

    def set_policy(
        self, who: Principal, name: str, policy: AttestationPolicy, request_id: str
    ) -> AttestationPolicy:
        """Store ``policy`` as key ``name``'s release policy (replacing any previous one):
        owner credential or operator. Audited with the old and new digests."""

        def run(out: Outcome) -> AttestationPolicy:
            record = self._key(who, name, Access.POLICY, out, usable=False)
            new = policy.to_json()
            out.detail["new_policy"] = policy_digest(new)
            old = self._storage.put_policy(record.app_id, name, new, self._now())
            out.detail["old_policy"] = policy_digest(old)
            return policy

        return self._run("key.policy", who, name, request_id, run)

    def get_policy(
        self, who: Principal, name: str, request_id: str = "-"
    ) -> AttestationPolicy | None:
        """Key ``name``'s release policy, or ``None`` (which denies every attested unwrap)."""

        def run(out: Outcome) -> AttestationPolicy | None:
            record = self._key(who, name, Access.READ, out, usable=False)
            return self._stored_policy(record.app_id, name)

        return self._run("key.get_policy", who, name, request_id, run)

    def _stored_policy(self, app_id: str, name: str) -> AttestationPolicy | None:
        stored = self._storage.get_policy(app_id, name)
        if stored is None:
            return None
        try:
            return AttestationPolicy.from_json(stored)
        except UsageError as exc:
            # Stored under older rules (a TDX policy with [] for "any RTMR", Revoked accepted, a
            # signer policy without a minimum SVN): it releases nothing until it is set again.
            raise AttestationError(
                f"the stored release policy of {name!r} is no longer valid ({exc}); its owner "
                "must set it again ('cipherspark key policy set')",
                "no_policy",
            ) from exc

    def attestation_nonce(
        self, who: Principal, name: str, request_id: str = "-"
    ) -> tuple[bytes, int]:
        """(a fresh single-use nonce for ``name``, seconds it stays valid)."""

        def run(out: Outcome) -> tuple[bytes, int]:
            record = self._key(who, name, Access.ATTEST, out)
            policy = self._stored_policy(record.app_id, name)
            lifetime = policy.max_evidence_age_seconds if policy else DEFAULT_MAX_EVIDENCE_AGE
            return self._nonces.issue(who.app_id, name), lifetime

        return self._run("attest.nonce", who, name, request_id, run)

    def _released_to(
        self,
        who: Principal,
        name: str,
        out: Outcome,
        presented: ReleaseEvidence,
    ) -> KeyRecord:
        """The key record, once evidence, policy, nonce and binding all check (else
        :class:`AttestationError` with its reason): what every attested release first proves."""
        record = self._key(who, name, Access.ATTEST, out)
        age = self._nonces.take(presented.nonce, who.app_id, name)
        evidence = Evidence(presented.tee, presented.quote)
        policy = self._stored_policy(record.app_id, name)
        if policy is None or policy.empty:
            raise AttestationError(
                f"primary key {name!r} has no release policy; an absent or empty policy denies",
                "no_policy",
            )
        if age > policy.max_evidence_age_seconds:
            raise AttestationError(
                f"the nonce is {age:.0f} s old, more than the policy's "
                f"{policy.max_evidence_age_seconds} s",
                "expired",
            )
        # Simulated evidence counts only if the operator registered its platform: the key's
        # owner alone must not be able to make this server trust a software "TEE". (Read for
        # every TEE type, so no spelling of ``tee`` can reach the simulated verifier without
        # it; DCAP verification ignores it.)
        operator_keys = [p.public_key for p in self._storage.list_simulated_platforms()]
        report = verify_evidence(
            evidence,
            policy=policy,
            dcap=self._dcap,
            collateral=presented.collateral,
            clock=self._attestation_clock,
            operator_platform_keys=operator_keys,
        )
        check_binding(report.report_data, presented.nonce, presented.public_key)
        return record

    def attested_unwrap(
        self,
        who: Principal,
        name: str,
        evidence: ReleaseEvidence,
        *,
        wrapped: bytes,
        request_id: str,
    ) -> tuple[int, str]:
        """(version, JWE of the data key to ``evidence.public_key``) once evidence, policy,
        nonce and binding all check; otherwise :class:`AttestationError` with its reason
        (audited)."""

        def run(out: Outcome) -> tuple[int, str]:
            record = self._released_to(who, name, out, evidence)
            out.version = version = keyring.wrapped_version(name, wrapped)
            data_key = keyring.open_wrapped(
                self._decryptable(record, version), name, version, wrapped
            )
            return version, seal_to(evidence.public_key, data_key)

        return self._run("datakey.attested_unwrap", who, name, request_id, run)

    def attested_transit_decrypt(
        self,
        who: Principal,
        name: str,
        evidence: ReleaseEvidence,
        *,
        ciphertext: str,
        request_id: str,
    ) -> tuple[int, str]:
        """(version, JWE to ``evidence.public_key`` of the plaintext of the ``vault:vN:``
        ``ciphertext``) under the same checks as :meth:`attested_unwrap`: what Vault-Transit
        clients wrapped (Parquet files written by pyarrow or parquet-java's VaultClient) opens
        in an attested worker too, and only there for an attested-only key."""

        def run(out: Outcome) -> tuple[int, str]:
            record = self._released_to(who, name, out, evidence)
            try:
                version, raw = keyring.parse_vault_ciphertext(ciphertext)
            except ValueError as exc:
                raise UsageError(f"invalid ciphertext: {exc}") from exc
            out.version = version
            plaintext = keyring.open_vault(
                self._decryptable(record, version), record.name, version, raw
            )
            return version, seal_to(evidence.public_key, plaintext)

        return self._run("transit.attested_decrypt", who, name, request_id, run)
