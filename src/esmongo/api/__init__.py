"""The HTTP service: accounts commands and queries, operations, metrics."""

from esmongo.api.app import build_services, create_app
from esmongo.api.auth import ApiKeys, Principal, Role

__all__ = ["ApiKeys", "Principal", "Role", "build_services", "create_app"]
