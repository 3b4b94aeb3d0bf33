"""The registry's access policy: inheritance, owners, MANAGE, USE_* on the way down, superusers."""

from __future__ import annotations

import pytest

from services.common.errors import PermissionDenied
from services.registry.access import AccessPolicy, Chain, Privilege, Securable, SecurableType

pytestmark = pytest.mark.unit

P = Privilege


def chain(grants: dict[tuple[str, str], set[str]], owners=("root", "root", "root")) -> Chain:
    levels = (
        Securable(SecurableType.CATALOG, "c", owners[0]),
        Securable(SecurableType.SCHEMA, "c.s", owners[1]),
        Securable(SecurableType.REGISTERED_MODEL, "c.s.m", owners[2]),
    )
    return Chain(levels, {k: frozenset(v) for k, v in grants.items()})


POLICY = AccessPolicy(superusers=["admin"], service_principals=["serving"])
REACH = {("CATALOG", "c"): {"USE_CATALOG"}, ("SCHEMA", "c.s"): {"USE_SCHEMA"}}


def test_superusers_may_do_anything_and_others_nothing_by_default():
    assert POLICY.decide("admin", chain({}), P.MANAGE).allowed
    decision = POLICY.decide("alice", chain({}), P.EXECUTE)
    assert not decision.allowed and "USE_CATALOG" in decision.reason


def test_a_privilege_granted_on_the_catalog_reaches_the_model():
    grants = {**REACH, ("CATALOG", "c"): {"USE_CATALOG", "EXECUTE"}}
    assert POLICY.decide("alice", chain(grants), P.EXECUTE).allowed
    assert not POLICY.decide("alice", chain(grants), P.MODIFY).allowed


def test_the_privilege_alone_is_not_enough_without_use_catalog_and_use_schema():
    only_model = {("REGISTERED_MODEL", "c.s.m"): {"EXECUTE"}}
    assert not POLICY.decide("alice", chain(only_model), P.EXECUTE).allowed
    assert not POLICY.decide("alice", chain({**only_model, ("CATALOG", "c"): {"USE_CATALOG"}}), P.EXECUTE).allowed
    assert POLICY.decide("alice", chain({**only_model, **REACH}), P.EXECUTE).allowed


def test_owners_and_manage_holders_hold_everything_beneath_them():
    assert POLICY.decide("alice", chain({}, owners=("alice", "root", "root")), P.MANAGE).allowed
    # Owning the model is not owning the catalog: the way down still needs USE_*.
    assert not POLICY.decide("alice", chain({}, owners=("root", "root", "alice")), P.EXECUTE).allowed
    assert POLICY.decide("alice", chain(REACH, owners=("root", "root", "alice")), P.MANAGE).allowed
    manage_schema = {("CATALOG", "c"): {"USE_CATALOG"}, ("SCHEMA", "c.s"): {"MANAGE"}}
    assert POLICY.decide("alice", chain(manage_schema), P.MODIFY).allowed


def test_require_raises_permission_denied_with_the_reason():
    with pytest.raises(PermissionDenied, match="lacks MODIFY"):
        POLICY.require("alice", chain({**REACH, ("REGISTERED_MODEL", "c.s.m"): {"EXECUTE"}}), P.MODIFY)


def test_only_service_principals_and_superusers_may_ask_about_others():
    assert POLICY.may_ask_for_others("serving") and POLICY.may_ask_for_others("admin")
    assert not POLICY.may_ask_for_others("alice")


def test_with_auth_turned_off_everyone_is_allowed():
    assert AccessPolicy([], [], enabled=False).decide("anonymous", chain({}), P.MANAGE).allowed


def test_service_principals_read_models_and_nothing_else_whatever_they_are_granted():
    everything = {**REACH, ("REGISTERED_MODEL", "c.s.m"): {"MANAGE", "MODIFY"}}
    assert POLICY.decide("serving", chain({}), P.EXECUTE).allowed
    for privilege in (P.MODIFY, P.MANAGE, P.CREATE_MODEL, P.SELECT):
        assert not POLICY.decide("serving", chain(everything, owners=("serving",) * 3), privilege).allowed
    schema_only = Chain(chain({}).levels[:2], {})
    assert not POLICY.decide("serving", schema_only, P.EXECUTE).allowed
    assert not POLICY.is_superuser("serving") and POLICY.may_register_securables("serving")
    assert not POLICY.may_register_securables("alice")


def test_top_level_securables_need_no_catalog_privileges():
    levels = (Securable(SecurableType.ENDPOINT, "chat", "alice"),)
    granted = Chain(levels, {("ENDPOINT", "chat"): frozenset({"EXECUTE"})})
    assert POLICY.decide("bob", granted, P.EXECUTE).allowed
    assert not POLICY.decide("bob", granted, P.SELECT).allowed
    assert POLICY.decide("alice", Chain(levels, {}), P.SELECT).allowed  # the owner holds everything
