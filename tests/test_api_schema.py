"""Property-based requests from the OpenAPI schema (schemathesis) against the real service.

Whatever the input, the service answers with a documented status and a body matching the
schema, and never with a 5xx.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from pymongo import MongoClient
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from esmongo.api import create_app
from esmongo.api.auth import KEY_PREFIX, hash_key
from esmongo.api.server import serve_in_thread
from esmongo.connect.connection import Settings

ADMIN_KEY = KEY_PREFIX + "schemathesis-admin-key"


@pytest.fixture(scope="module")
def api_schema(server_uri: str) -> Iterator[schemathesis.BaseSchema]:
    database = f"t_schema_{uuid.uuid4().hex[:8]}"
    with MongoClient(server_uri) as client:
        client[database]["api_keys"].insert_one(
            {
                "_id": hash_key(ADMIN_KEY),
                "prefix": ADMIN_KEY[:12],
                "role": "admin",
                "userId": "fuzzer",
                "userName": "Fuzzer",
                "createdAt": datetime.now(UTC),
                "revokedAt": None,
            }
        )
        app = create_app(settings=Settings(mongodb_uri=server_uri, database=database))
        with serve_in_thread(app) as base_url:
            yield schemathesis.openapi.from_url(f"{base_url}/openapi.json")
        client.drop_database(database)


# schemathesis' own pytest plugin does not run on pytest 9: each operation's strategy is
# driven by hypothesis here instead.
def test_no_server_errors_and_documented_responses(api_schema: schemathesis.BaseSchema) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                checks=[not_a_server_error, response_schema_conformance],
            )

        check()
