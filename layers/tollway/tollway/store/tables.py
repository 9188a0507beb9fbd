"""DynamoDB tables for local runs and tests, created from template.yaml's own declarations.

The deployed schema is written once, in template.yaml. `tollway dev` and the tests read every
`AWS::DynamoDB::Table` resource from it and create the same tables (key schema, attributes,
billing mode, indexes, stream, TTL) in moto or DynamoDB Local, under names they choose:

    ensure_tables(boto3.client("dynamodb"), find_template(), {"TollwayTable": "TollwayTable"})

Only pyyaml is needed to read the template (CloudFormation's short-form tags such as !Ref and
!GetAtt load as their long forms); properties the local table needs must be literal values.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

TEMPLATE_NAME = "template.yaml"
TABLE_TYPE = "AWS::DynamoDB::Table"
# CloudFormation index properties that create_table also takes (others, such as
# ContributorInsightsSpecification, have no create_table counterpart).
_INDEX_KEYS = ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput", "OnDemandThroughput")


class _TemplateLoader(yaml.SafeLoader):
    """SafeLoader that reads CloudFormation short-form tags as their long forms."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:
        raise yaml.constructor.ConstructorError(None, None, f"unexpected node for !{suffix}", node.start_mark)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_TemplateLoader.add_multi_constructor("!", _intrinsic)


def load_template(template_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a CloudFormation/SAM template (YAML or JSON) into plain data."""
    with open(template_path, encoding="utf-8") as f:
        template = yaml.load(f, Loader=_TemplateLoader)  # a SafeLoader subclass: no arbitrary objects
    if not isinstance(template, dict):
        raise ValueError(f"{template_path} is not a CloudFormation template (not a mapping)")
    return template


def load_table_definitions(template_path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Every DynamoDB table declared in the template, by logical id.

    Each value is `{"create_table": kwargs, "ttl_attribute": name or None}`, where `kwargs` are
    the boto3 `create_table` arguments except `TableName`: KeySchema, AttributeDefinitions,
    BillingMode, and ProvisionedThroughput, GlobalSecondaryIndexes, LocalSecondaryIndexes and
    StreamSpecification when declared. Server-side encryption, point-in-time recovery, tags and
    deletion protection are deployment concerns and are left out.
    """
    resources = load_template(template_path).get("Resources") or {}
    tables: dict[str, dict[str, Any]] = {}
    for logical_id, resource in resources.items():
        if isinstance(resource, dict) and resource.get("Type") == TABLE_TYPE:
            tables[logical_id] = _table_definition(logical_id, resource.get("Properties") or {})
    return tables


def _table_definition(logical_id: str, props: dict[str, Any]) -> dict[str, Any]:
    def literal(key: str, value: Any) -> Any:
        if _has_intrinsic(value):
            raise ValueError(f"{logical_id}.{key} uses an intrinsic function; local tables need a literal value")
        return value

    for required in ("KeySchema", "AttributeDefinitions"):
        if required not in props:
            raise ValueError(f"{logical_id} declares no {required}")
    billing = literal("BillingMode", props.get("BillingMode", "PROVISIONED"))
    kwargs: dict[str, Any] = {
        "KeySchema": literal("KeySchema", props["KeySchema"]),
        "AttributeDefinitions": literal("AttributeDefinitions", props["AttributeDefinitions"]),
        "BillingMode": billing,
    }
    if billing == "PROVISIONED":
        kwargs["ProvisionedThroughput"] = literal(
            "ProvisionedThroughput",
            props.get("ProvisionedThroughput") or {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5},
        )
    for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if props.get(key):
            kwargs[key] = [{k: v for k, v in index.items() if k in _INDEX_KEYS} for index in literal(key, props[key])]
    if stream := props.get("StreamSpecification"):
        kwargs["StreamSpecification"] = {
            "StreamEnabled": True,
            "StreamViewType": literal("StreamSpecification", stream)["StreamViewType"],
        }
    ttl = literal("TimeToLiveSpecification", props.get("TimeToLiveSpecification") or {})
    ttl_attribute = ttl.get("AttributeName") if ttl.get("Enabled") in (True, "true", "True") else None
    return {"create_table": kwargs, "ttl_attribute": ttl_attribute}


def _has_intrinsic(value: Any) -> bool:
    if isinstance(value, dict):
        if len(value) == 1:
            (key,) = value
            if key in ("Ref", "Condition") or str(key).startswith("Fn::"):
                return True
        return any(_has_intrinsic(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_intrinsic(v) for v in value)
    return False


def ensure_tables(client: Any, template_path: str | os.PathLike[str], names: dict[str, str]) -> None:
    """Create the tables `names` maps (logical id -> table name) unless they exist; idempotent.

    Waits until each table is active and enables TTL as the template declares. An existing table
    whose key schema differs from the template's is an error (recreate the local table).
    """
    definitions = load_table_definitions(template_path)
    unknown = sorted(set(names) - set(definitions))
    if unknown:
        raise ValueError(
            f"{template_path} declares no DynamoDB table {', '.join(unknown)} "
            f"(tables: {', '.join(sorted(definitions)) or 'none'})"
        )
    for logical_id, table_name in names.items():
        definition = definitions[logical_id]
        kwargs = definition["create_table"]
        try:
            client.create_table(TableName=table_name, **kwargs)
        except client.exceptions.ResourceInUseException:
            existing = client.describe_table(TableName=table_name)["Table"]["KeySchema"]
            if _key_schema(existing) != _key_schema(kwargs["KeySchema"]):
                raise ValueError(
                    f"table {table_name} exists with key schema {existing}, but {logical_id} in "
                    f"{template_path} declares {kwargs['KeySchema']}; delete the local table"
                ) from None
        client.get_waiter("table_exists").wait(TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        if definition["ttl_attribute"]:
            _ensure_ttl(client, table_name, definition["ttl_attribute"])


def _key_schema(schema: list[dict[str, str]]) -> list[tuple[str, str]]:
    return sorted((k["AttributeName"], k["KeyType"]) for k in schema)


def _ensure_ttl(client: Any, table_name: str, attribute: str) -> None:
    current = client.describe_time_to_live(TableName=table_name).get("TimeToLiveDescription", {})
    if current.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
        if current.get("AttributeName") == attribute:
            return
        raise ValueError(
            f"table {table_name} has TTL on {current.get('AttributeName')!r}, the template declares {attribute!r}"
        )
    client.update_time_to_live(
        TableName=table_name, TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute}
    )


def find_template(start: str | os.PathLike[str] | None = None) -> Path:
    """template.yaml of the repository: the nearest one walking up from `start` (default: the
    current directory), else the one beside this package's source checkout (editable install)."""
    origins = [Path(start) if start is not None else Path.cwd(), Path(__file__).resolve().parent]
    for origin in origins:
        origin = origin.resolve()
        for directory in (origin, *origin.parents):
            candidate = directory / TEMPLATE_NAME
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"no {TEMPLATE_NAME} found above {origins[0]} (run from the Tollway repository)")
