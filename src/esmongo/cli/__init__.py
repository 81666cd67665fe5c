"""The `esmongo` command line: one module per command group, `common` for what they share."""

from esmongo.cli import projections, schemas, service, store  # noqa: F401 - registers commands
from esmongo.cli.common import app

__all__ = ["app"]
