"""The `esmongo` command line: one module per command group, `common` for what they share."""

from esmongo.cli import (  # noqa: F401 - registers commands
    archive,
    check,
    crypto,
    keys,
    projections,
    schemas,
    service,
    store,
)
from esmongo.cli.common import app

__all__ = ["app"]
