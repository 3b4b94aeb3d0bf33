"""Names in the registry: three-level names, aliases, artifact paths that cannot escape."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.registry.names import ModelName, SchemaName, check_alias, clean_relative_path
from services.registry.paging import decode_token, encode_token, next_token

pytestmark = pytest.mark.unit


def test_three_level_names_parse_and_refuse_malformed_ones():
    assert ModelName.parse("main.default.My-Model_2").full == "main.default.My-Model_2"
    assert SchemaName.parse("main.s").full == "main.s"
    for bad in ("a.b", "a.b.c.d", "Main.s.m", "m.s.bad name", "", "1c.s.m"):
        with pytest.raises(InvalidArgument):
            ModelName.parse(bad)


@pytest.mark.parametrize("alias", ["latest", "v3", "V12", "", "has space", "-x"])
def test_reserved_and_malformed_aliases_are_refused(alias):
    with pytest.raises(InvalidArgument):
        check_alias(alias)


def test_aliases_people_use_are_fine():
    for alias in ("champion", "challenger", "prod_2024", "blue-green", "v2beta"):
        assert check_alias(alias) == alias


@pytest.mark.parametrize("path", ["../x", "a/../../b", "a//b/..", "x\x00y"])
def test_artifact_paths_cannot_escape_the_root(path):
    with pytest.raises(InvalidArgument):
        clean_relative_path(path)


def test_artifact_paths_are_normalized():
    assert clean_relative_path("/model/weights.bin") == "model/weights.bin"
    assert clean_relative_path("a\\b") == "a/b"


def test_page_tokens_round_trip_and_garbage_is_refused():
    assert decode_token(encode_token(40)) == 40 and decode_token("") == 0
    assert next_token(0, 10, 11) == encode_token(10) and next_token(0, 10, 10) == ""
    with pytest.raises(InvalidArgument):
        decode_token("garbage")


@pytest.mark.parametrize(
    "check",
    [
        lambda: ModelName.parse("main.default.name\n"),
        lambda: ModelName.parse("main\n.default.name"),
        lambda: SchemaName.parse("main.default\n"),
        lambda: check_alias("champion\n"),
    ],
)
def test_a_trailing_newline_is_not_part_of_a_valid_name(check):
    with pytest.raises(InvalidArgument):
        check()
