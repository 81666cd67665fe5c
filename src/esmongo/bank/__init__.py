"""The reference domain: the seed's bank accounts, built on the public esmongo API only."""

from esmongo.bank.account import (
    CURRENCIES,
    Account,
    AccountAlreadyExists,
    AccountError,
    AccountNotActive,
    AccountStatus,
    InsufficientFunds,
    InvalidAmount,
    InvalidCurrency,
    InvalidTransition,
    TransactionIdReused,
    parse_amount,
)
from esmongo.bank.bank import Bank
from esmongo.bank.commands import (
    AccountCommandHandler,
    ActivateAccount,
    CloseAccount,
    Command,
    CommandResult,
    CreateAccount,
    CreditAccount,
    DebitAccount,
    FreezeAccount,
    TransferFunds,
    UnfreezeAccount,
)
from esmongo.bank.history import BalanceHistory, BalancePoint, balance_history
from esmongo.bank.read_models import (
    AccountsReadModel,
    AnalyticsHourlyReadModel,
    TransactionsReadModel,
    bank_projections,
)
from esmongo.bank.schemas import ACCOUNT_SCHEMAS

__all__ = [
    "ACCOUNT_SCHEMAS",
    "CURRENCIES",
    "Account",
    "AccountAlreadyExists",
    "AccountCommandHandler",
    "AccountError",
    "AccountNotActive",
    "AccountStatus",
    "AccountsReadModel",
    "ActivateAccount",
    "AnalyticsHourlyReadModel",
    "BalanceHistory",
    "BalancePoint",
    "Bank",
    "CloseAccount",
    "Command",
    "CommandResult",
    "CreateAccount",
    "CreditAccount",
    "DebitAccount",
    "FreezeAccount",
    "InsufficientFunds",
    "InvalidAmount",
    "InvalidCurrency",
    "InvalidTransition",
    "TransactionIdReused",
    "TransactionsReadModel",
    "TransferFunds",
    "UnfreezeAccount",
    "balance_history",
    "bank_projections",
    "parse_amount",
]
