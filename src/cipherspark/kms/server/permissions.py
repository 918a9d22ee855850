"""Who may do what with a primary key: roles, the caller's identity, and the permission table.

Every app has *credentials*, each with a role:

* **owner**: what ``kms app create`` prints. Manages the app's keys and policies and may read
  any key material of them (to decrypt results on the owner's own machine); its releases of a
  key that has a release policy are audited as such.
* **workload**: minted per cluster (``kms credential create --role workload``). Reads key
  descriptions and policies, generates *wrapped* data keys, asks for attested release, and
  encrypts with Transit; it receives key material without TEE evidence only for keys *without*
  a release policy (the trusted-cluster mode). It never changes a key.

The operator (admin token) is no app credential; on an app's keys it may only read and set
release policies.

:data:`PERMISSIONS` is the table; :func:`check` applies it. A key with a release policy (any
stored policy, even ``{}``) is *attested-only*: its key material goes to attested workers and
the owner credential, through no other route.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum

from cipherspark.errors import PermissionDeniedError

__all__ = [
    "CREDENTIAL_ROLES",
    "OPERATOR_AUDIT_NAME",
    "PERMISSIONS",
    "Access",
    "Principal",
    "Role",
    "Rule",
    "check",
]

#: What the audit log's ``app`` field says for the operator (admin token).
OPERATOR_AUDIT_NAME = "admin"


class Role(StrEnum):
    """What a caller is to an app: one of its credentials' roles, or the operator."""

    OWNER = "owner"
    WORKLOAD = "workload"
    #: The admin-token holder acting on an app's key (never a stored credential's role).
    OPERATOR = "operator"


#: The roles a stored credential may have.
CREDENTIAL_ROLES = (Role.OWNER, Role.WORKLOAD)


class Access(Enum):
    """What an operation does with a key, which decides who may do it."""

    #: list, describe, read the release policy (no key material)
    READ = "read"
    #: a fresh *wrapped* data key, Transit wrapped data key (nothing leaves in clear; the
    #: caller never knows the key it holds wrapped)
    WRAP = "wrap"
    #: Transit encrypt: a ciphertext of a plaintext the caller chose. No key material leaves,
    #: but a ciphertext under the key is what readers accept as written under it (a Parquet
    #: KEK of a ``vault:`` file): for a key with a release policy, only the owner may, or a
    #: leaked workload credential could forge data that attested readers take as genuine.
    SEAL = "seal"
    #: attestation nonce and attested unwrap (evidence decides)
    ATTEST = "attest"
    #: key material without evidence: unwrap, plaintext data key, Transit decrypt and
    #: plaintext data key
    RELEASE = "release"
    #: create, rotate, retire versions, enable / disable, schedule / cancel deletion, rewrap
    MANAGE = "manage"
    #: set or replace the release policy
    POLICY = "policy"


class Rule(Enum):
    """One cell of the permission table."""

    ALLOW = "allow"
    #: allowed only for keys without a release policy (trusted-cluster mode)
    UNLESS_POLICY = "unless policy"
    DENY = "deny"


_A, _U, _D = Rule.ALLOW, Rule.UNLESS_POLICY, Rule.DENY
#: (role, access) -> rule. Owners may do everything with their own keys.
PERMISSIONS: dict[tuple[Role, Access], Rule] = {
    **{(Role.OWNER, access): _A for access in Access},
    (Role.WORKLOAD, Access.READ): _A,
    (Role.WORKLOAD, Access.WRAP): _A,
    (Role.WORKLOAD, Access.SEAL): _U,
    (Role.WORKLOAD, Access.ATTEST): _A,
    (Role.WORKLOAD, Access.RELEASE): _U,
    (Role.WORKLOAD, Access.MANAGE): _D,
    (Role.WORKLOAD, Access.POLICY): _D,
    (Role.OPERATOR, Access.READ): _A,
    (Role.OPERATOR, Access.POLICY): _A,
    **{
        (Role.OPERATOR, access): _D
        for access in Access
        if access not in (Access.READ, Access.POLICY)
    },
}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the app whose keys it acts on, its credential and role.

    ``credential_id`` is ``None`` only for the operator (:meth:`operator`).
    """

    app_id: str
    credential_id: str | None
    role: Role

    @classmethod
    def operator(cls, app_id: str) -> Principal:
        """The operator (admin token) acting on app ``app_id``'s keys."""
        return cls(app_id, None, Role.OPERATOR)

    @property
    def audit_app(self) -> str:
        """Who the audit log names: the app id, or ``admin`` for the operator."""
        return OPERATOR_AUDIT_NAME if self.role is Role.OPERATOR else self.app_id


def check(role: Role, access: Access, *, has_policy: bool, name: str | None = None) -> None:
    """:class:`PermissionDeniedError` unless ``role`` may have ``access`` to the key ``name``
    (``has_policy``: the key has a release policy)."""
    rule = PERMISSIONS[(role, access)]
    if rule is Rule.ALLOW or (rule is Rule.UNLESS_POLICY and not has_policy):
        return
    what = f"primary key {name!r}" if name else "primary keys"
    if rule is Rule.UNLESS_POLICY and access is Access.SEAL:
        raise PermissionDeniedError(
            f"{what} has a release policy: only the app's owner credential may Transit-encrypt "
            "under it (attested workers write under it with attested release, so a workload "
            "credential alone cannot forge data the key vouches for)"
        )
    if rule is Rule.UNLESS_POLICY:
        raise PermissionDeniedError(
            f"{what} has a release policy: its data keys are released only to attested workers "
            "(attested unwrap) or to the app's owner credential"
        )
    if role is Role.OPERATOR:
        raise PermissionDeniedError(
            f"the admin token may only read and set the release policy of {what}"
        )
    raise PermissionDeniedError(
        f"a {role.value} credential may not {_VERBS[access]} {what}; use the app's owner credential"
    )


_VERBS = {
    Access.READ: "read",
    Access.WRAP: "wrap data keys under",
    Access.SEAL: "Transit-encrypt under",
    Access.ATTEST: "ask for attested release of",
    Access.RELEASE: "unwrap data keys of",
    Access.MANAGE: "create, rotate, rewrap, configure, disable or delete",
    Access.POLICY: "set the release policy of",
}
