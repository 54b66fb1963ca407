"""Fixtures of the payment tests: the TJ shared ledger imported and billed."""

import pytest
import sqlalchemy as sa

from app.billing.services import run_billing
from app.extensions import db
from app.network.models import Account
from app.org.models import User


@pytest.fixture
def tj_billed(import_fixture):
    """TJ-shared.xlsx imported into TJ and season 2025-2026 billed."""
    import_fixture("TJ", "TJ-shared.xlsx")
    run_billing("TJ", "2025-2026")
    db.session.expire_all()


@pytest.fixture
def tj_account(tj_billed):
    """Look up a TJ account by its legacy number."""

    def _account(legacy_no):
        return db.session.scalar(sa.select(Account).filter_by(legacy_no=legacy_no))

    return _account


@pytest.fixture
def cashier(demo):
    """Look up a demo user by username."""

    def _user(username):
        return db.session.scalar(sa.select(User).filter_by(username=username))

    return _user
