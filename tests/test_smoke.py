from decimal import Decimal

from pymongo.asynchronous.database import AsyncDatabase

from esmongo.bank import ActivateAccount, Bank, CreateAccount, CreditAccount


async def test_bank_round_trip(db: AsyncDatabase) -> None:
    bank = await Bank(db).init()
    assert (await bank.handle(CreateAccount("a1", "u1", "Ann"))).success
    assert (await bank.handle(ActivateAccount("a1"))).success
    result = await bank.handle(CreditAccount("a1", Decimal("10.50"), "t1"))
    assert result.success, result.error
    account = await bank.accounts.load("a1")
    assert account.balance == Decimal("10.50")
    assert account.version == 3
