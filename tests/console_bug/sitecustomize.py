"""Loaded by the `esmongo serve` that the console's browser tests start (PYTHONPATH): gives
the bank's accounts_read projection a bug while the file ESMONGO_TEST_BUG_FILE exists.

Deleting the file is "deploying the fix" without a restart, so a test can dead-letter a
poison event, fix the bug, and retry from the console, deterministically. The database,
driver and service are the real ones; only the projection's code is made to fail.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

_BUG = os.environ.get("ESMONGO_TEST_BUG_FILE")

if _BUG:
    from esmongo.bank.read_models import AccountsReadModel

    _moved = AccountsReadModel.moved

    @functools.wraps(_moved)  # keeps the @handles marker: still the credit/debit handler
    def moved(self: AccountsReadModel, event):  # type: ignore[no-untyped-def]
        if event.data.get("reason") == "poison" and Path(_BUG).exists():
            raise ValueError(f"cannot project {event.event_id}: the poison bug")
        return _moved(self, event)

    AccountsReadModel.moved = moved  # type: ignore[method-assign]
    AccountsReadModel.max_attempts = 2
    AccountsReadModel.retry_backoff_s = 0.01
