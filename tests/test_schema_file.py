"""The published JSON Schema: valid 2020-12, the one the package uses, strict on typos."""

from __future__ import annotations

import json

import jsonschema

from flowengine.agentfile.schema_validation import agent_schema, schema_file

from .conftest import ROOT


def test_schema_is_valid_json_schema_2020_12() -> None:
    schema = json.loads((ROOT / "schemas" / "agent.schema.json").read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_package_reads_the_schema_in_schemas_folder() -> None:
    assert agent_schema() == json.loads((ROOT / "schemas" / "agent.schema.json").read_text())
    assert schema_file().endswith("agent.schema.json")


def test_every_object_in_the_schema_forbids_unknown_fields() -> None:
    schema = agent_schema()
    objects = [schema, *(d for d in schema["$defs"].values() if "properties" in d)]
    for definition in objects:
        if definition is schema["$defs"]["step"]:
            continue  # dispatches on 'type' to process/decision/terminal, which are strict
        assert definition.get("additionalProperties") is False, definition


def test_committed_schema_is_built_from_the_step_kinds() -> None:
    """schemas/agent.schema.json is what flowengine/steps/ builds: `make schema` writes it."""
    from flowengine.steps.schema import schema_text

    committed = (ROOT / "schemas" / "agent.schema.json").read_text(encoding="utf-8")
    assert committed == schema_text(), "the step kinds changed: run `make schema`"
