"""The registry's defaults are the safe ones."""

from __future__ import annotations

import pytest

from services.registry.settings import RegistrySettings

pytestmark = pytest.mark.unit


def test_service_principals_are_not_superusers_and_local_sources_are_off_by_default():
    settings = RegistrySettings()
    assert settings.registry_superusers == ("admin",)
    assert settings.registry_service_principals == ("tessera-services",)
    assert not set(settings.registry_superusers) & set(settings.registry_service_principals)
    assert settings.registry_allow_local_sources is False
    assert settings.registry_statement_timeout_ms > 0


def test_the_statement_timeout_travels_in_the_dsn_options_next_to_existing_ones():
    settings = RegistrySettings(pg_dsn="postgresql://u@h:5432/db?options=-c%20search_path%3Dx")
    dsn = settings.pg_dsn_with_statement_timeout()
    assert "statement_timeout=30000" in dsn and "search_path" in dsn
