"""The `esmongo` command line: one module per command group, `common` for what they share."""

from esmongo.cli import projections, service, store  # noqa: F401 - registers the commands
from esmongo.cli.common import app

__all__ = ["app"]
