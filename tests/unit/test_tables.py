"""Local DynamoDB tables come from template.yaml's own declarations."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from tollway.store.tables import ensure_tables, find_template, load_table_definitions, load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


@pytest.fixture
def fake_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"):
        monkeypatch.delenv(key, raising=False)


def test_template_loads_with_short_form_tags() -> None:
    template = load_template(TEMPLATE)
    outputs = template["Outputs"]
    assert outputs["TableName"]["Value"] == {"Ref": "TollwayTable"}
    assert [list(url) for url in outputs["ApiUrl"]["Value"]["Fn::If"][1:]] == [["Fn::Sub"], ["Fn::Sub"]]
    assert outputs["McpEndpoint"]["Value"]["Fn::If"][0] == "HasCustomDomain"


def test_definitions_from_the_real_template() -> None:
    definitions = load_table_definitions(TEMPLATE)
    assert set(definitions) == {"TollwayTable"}
    table = definitions["TollwayTable"]
    assert table["ttl_attribute"] == "expires_at"
    kwargs = table["create_table"]
    assert kwargs["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert kwargs["AttributeDefinitions"] == [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
        {"AttributeName": "gsi1pk", "AttributeType": "S"},
        {"AttributeName": "gsi1sk", "AttributeType": "S"},
    ]
    assert [index["IndexName"] for index in kwargs["GlobalSecondaryIndexes"]] == ["ByMonth"]
    assert kwargs["BillingMode"] == "PAY_PER_REQUEST"
    assert "ProvisionedThroughput" not in kwargs


def test_indexes_stream_and_provisioned_throughput(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(
        """
Resources:
  Other:
    Type: AWS::SQS::Queue
    Properties: {QueueName: !Sub "${AWS::StackName}-q"}
  Events:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: !Sub "${AWS::StackName}-events"
      AttributeDefinitions:
        - {AttributeName: id, AttributeType: S}
        - {AttributeName: gsi1pk, AttributeType: S}
      KeySchema:
        - {AttributeName: id, KeyType: HASH}
      ProvisionedThroughput: {ReadCapacityUnits: 2, WriteCapacityUnits: 3}
      GlobalSecondaryIndexes:
        - IndexName: gsi1
          KeySchema: [{AttributeName: gsi1pk, KeyType: HASH}]
          Projection: {ProjectionType: KEYS_ONLY}
          ProvisionedThroughput: {ReadCapacityUnits: 1, WriteCapacityUnits: 1}
          ContributorInsightsSpecification: {Enabled: true}
      StreamSpecification: {StreamViewType: NEW_IMAGE}
      SSESpecification: {SSEEnabled: true, KMSMasterKeyId: !Ref Key}
""",
        encoding="utf-8",
    )
    definitions = load_table_definitions(template)
    assert set(definitions) == {"Events"}
    kwargs = definitions["Events"]["create_table"]
    assert kwargs["BillingMode"] == "PROVISIONED"
    assert kwargs["ProvisionedThroughput"] == {"ReadCapacityUnits": 2, "WriteCapacityUnits": 3}
    assert kwargs["GlobalSecondaryIndexes"] == [
        {
            "IndexName": "gsi1",
            "KeySchema": [{"AttributeName": "gsi1pk", "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
            "ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1},
        }
    ]
    assert kwargs["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    assert "SSESpecification" not in kwargs
    assert definitions["Events"]["ttl_attribute"] is None


def test_intrinsic_in_key_schema_is_an_error(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(
        """
Resources:
  T:
    Type: AWS::DynamoDB::Table
    Properties:
      AttributeDefinitions: [{AttributeName: !Ref KeyName, AttributeType: S}]
      KeySchema: [{AttributeName: !Ref KeyName, KeyType: HASH}]
      BillingMode: PAY_PER_REQUEST
""",
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match="intrinsic"):
        load_table_definitions(template)


@mock_aws
def test_ensure_tables_creates_the_table_with_key_schema_and_ttl(fake_aws: None) -> None:
    client = boto3.client("dynamodb", region_name="us-east-1")
    ensure_tables(client, TEMPLATE, {"TollwayTable": "tollway-test"})

    table = client.describe_table(TableName="tollway-test")["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = client.describe_time_to_live(TableName="tollway-test")["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}

    client.put_item(TableName="tollway-test", Item={"pk": {"S": "SESSION#1"}, "sk": {"S": "META"}})
    assert client.get_item(TableName="tollway-test", Key={"pk": {"S": "SESSION#1"}, "sk": {"S": "META"}})["Item"]


@mock_aws
def test_ensure_tables_is_idempotent(fake_aws: None) -> None:
    client = boto3.client("dynamodb", region_name="us-east-1")
    ensure_tables(client, TEMPLATE, {"TollwayTable": "tollway-test"})
    client.put_item(TableName="tollway-test", Item={"pk": {"S": "a"}, "sk": {"S": "b"}})

    ensure_tables(client, TEMPLATE, {"TollwayTable": "tollway-test"})

    assert client.list_tables()["TableNames"] == ["tollway-test"]
    assert client.get_item(TableName="tollway-test", Key={"pk": {"S": "a"}, "sk": {"S": "b"}})["Item"]
    ttl = client.describe_time_to_live(TableName="tollway-test")["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at"


@mock_aws
def test_ensure_tables_rejects_an_existing_table_with_another_key_schema(fake_aws: None) -> None:
    client = boto3.client("dynamodb", region_name="us-east-1")
    client.create_table(
        TableName="tollway-test",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    with pytest.raises(ValueError, match="key schema"):
        ensure_tables(client, TEMPLATE, {"TollwayTable": "tollway-test"})


def test_ensure_tables_rejects_an_unknown_logical_id() -> None:
    with pytest.raises(ValueError, match="NoSuchTable"):
        ensure_tables(object(), TEMPLATE, {"NoSuchTable": "x"})


def test_find_template_walks_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_template(ROOT / "layers" / "tollway" / "tollway") == TEMPLATE
    (tmp_path / "template.yaml").write_text("Resources: {}\n", encoding="utf-8")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    assert find_template() == tmp_path / "template.yaml"
