"""Who may do what: privileges on catalogs, schemas, models, experiments, endpoints and monitors.

A securable sits in a chain (catalog -> schema -> object). A principal holds a
privilege on a level when it is granted there or on a level above (inheritance);
owners and MANAGE holders of a level hold everything on it and beneath it;
superusers hold everything. Reaching a schema or an object also needs
USE_CATALOG on the catalog and USE_SCHEMA on the schema, as in Unity Catalog.
Endpoints and monitors are top-level: a chain of one level, owner and grants only.
Datasets sit under a schema like models (catalog -> schema -> dataset).

Service principals (serving, retrieval, monitoring...) are not superusers: they
hold a fixed role, whatever is granted to them or owned by them: EXECUTE on
registered models (read versions, aliases and artifacts: what serving needs to
load a model), asking CheckPrivilege about others, registering the securables
of their service, and creating lineage edges. Nothing else.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from services.common.errors import PermissionDenied


class Privilege(enum.StrEnum):
    USE_CATALOG = "USE_CATALOG"
    USE_SCHEMA = "USE_SCHEMA"
    CREATE_SCHEMA = "CREATE_SCHEMA"
    CREATE_MODEL = "CREATE_MODEL"
    EXECUTE = "EXECUTE"
    MODIFY = "MODIFY"
    MANAGE = "MANAGE"
    # Read the data an object holds: an endpoint's logged requests, a monitor's results.
    SELECT = "SELECT"


class SecurableType(enum.StrEnum):
    CATALOG = "CATALOG"
    SCHEMA = "SCHEMA"
    REGISTERED_MODEL = "REGISTERED_MODEL"
    EXPERIMENT = "EXPERIMENT"
    ENDPOINT = "ENDPOINT"
    MONITOR = "MONITOR"
    DATASET = "DATASET"


# Securables other services own and register here (top-level: no catalog or schema above them).
TOP_LEVEL_TYPES = frozenset({SecurableType.ENDPOINT, SecurableType.MONITOR})
# Securables other services register under a schema (`catalog.schema.name`), inheriting its grants.
SCHEMA_LEVEL_TYPES = frozenset({SecurableType.DATASET})
REGISTERED_TYPES = TOP_LEVEL_TYPES | SCHEMA_LEVEL_TYPES

# Who may see a securable (in lineage, and its grants): holders of any of these privileges on it.
SEEN_WITH = {
    SecurableType.CATALOG: (Privilege.USE_CATALOG,),
    SecurableType.SCHEMA: (Privilege.USE_SCHEMA,),
    SecurableType.REGISTERED_MODEL: (Privilege.EXECUTE,),
    SecurableType.EXPERIMENT: (Privilege.EXECUTE,),
    SecurableType.ENDPOINT: (Privilege.EXECUTE, Privilege.MANAGE, Privilege.SELECT),
    SecurableType.MONITOR: (Privilege.SELECT, Privilege.MANAGE),
    SecurableType.DATASET: (Privilege.SELECT, Privilege.MODIFY, Privilege.MANAGE),
}


@dataclass(frozen=True)
class Securable:
    type: SecurableType
    name: str
    owner: str


@dataclass(frozen=True)
class Chain:
    """A securable and its ancestors, catalog first, with the principal's grants on each."""

    levels: tuple[Securable, ...]
    # (securable_type, securable_name) -> privileges granted to the principal there.
    grants: dict[tuple[str, str], frozenset[str]]

    @property
    def target(self) -> Securable:
        return self.levels[-1]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


class AccessPolicy:
    def __init__(self, superusers: Iterable[str], service_principals: Iterable[str], enabled: bool = True) -> None:
        self.superusers = frozenset(superusers)
        self.service_principals = frozenset(service_principals)
        # Auth turned off (TESSERA_AUTH_MODE=none): every caller is anonymous and allowed.
        self.enabled = enabled

    def is_superuser(self, principal: str) -> bool:
        return not self.enabled or principal in self.superusers

    def is_service_principal(self, principal: str) -> bool:
        return principal in self.service_principals and not self.is_superuser(principal)

    def may_ask_for_others(self, principal: str) -> bool:
        return self.is_superuser(principal) or principal in self.service_principals

    def may_register_securables(self, principal: str) -> bool:
        return self.is_superuser(principal) or principal in self.service_principals

    def may_link_lineage(self, principal: str) -> bool:
        """Service principals record lineage (training, serving) without read rights on both ends."""
        return self.is_superuser(principal) or principal in self.service_principals

    def decide(self, principal: str, chain: Chain, privilege: Privilege) -> Decision:
        if self.is_superuser(principal):
            return Decision(True, f"{principal} is a superuser")
        if principal in self.service_principals:
            return self._service_role(principal, chain, privilege)
        held: set[str] = set()
        everything_from: Securable | None = None
        needed: list[tuple[int, Privilege]] = []
        levels = chain.levels
        if levels[0].type == SecurableType.CATALOG and privilege != Privilege.USE_CATALOG:
            needed.append((0, Privilege.USE_CATALOG))
        if len(levels) > 1 and levels[1].type == SecurableType.SCHEMA and privilege != Privilege.USE_SCHEMA:
            needed.append((1, Privilege.USE_SCHEMA))
        needed.append((len(levels) - 1, privilege))
        held_at: list[set[str] | None] = []
        for level in levels:
            granted = chain.grants.get((level.type.value, level.name), frozenset())
            if everything_from is None and (level.owner == principal or Privilege.MANAGE in granted):
                everything_from = level
            held |= granted
            held_at.append(None if everything_from is not None else set(held))
        for index, need in needed:
            have = held_at[index]
            if have is not None and need not in have:
                where = levels[index]
                return Decision(False, f"{principal} lacks {need} on {where.type.lower()} {where.name}")
        if everything_from is not None:
            return Decision(True, f"{principal} owns or manages {everything_from.type.lower()} {everything_from.name}")
        return Decision(True, f"{privilege} granted to {principal}")

    @staticmethod
    def _service_role(principal: str, chain: Chain, privilege: Privilege) -> Decision:
        target = chain.target
        if privilege == Privilege.EXECUTE and target.type == SecurableType.REGISTERED_MODEL:
            return Decision(True, f"{principal} is a service principal: it reads registered models")
        return Decision(
            False,
            f"{principal} is a service principal; its role has no {privilege} on {target.type.lower()} {target.name}",
        )

    def sees(self, principal: str, chain: Chain) -> bool:
        return any(self.decide(principal, chain, p).allowed for p in SEEN_WITH[chain.target.type])

    def require(self, principal: str, chain: Chain, privilege: Privilege) -> None:
        decision = self.decide(principal, chain, privilege)
        if not decision.allowed:
            raise PermissionDenied(f"permission denied: {decision.reason}")
