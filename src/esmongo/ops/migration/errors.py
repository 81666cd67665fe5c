"""The one error of migrations, below every step so that each can raise it."""

from __future__ import annotations

from esmongo.errors import EsmongoError


class MigrationError(EsmongoError):
    """A migration cannot run, verify, switch or roll back as asked."""
