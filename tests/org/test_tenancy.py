"""The tenant scope: one company never reads or writes another's rows."""

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import aliased

from app.billing.models import LedgerEntry
from app.billing.services import run_billing
from app.extensions import db
from app.network.models import Account, Building, Community
from app.org.models import User
from app.tenancy import SYSTEM_SCOPE, TenantScopeError, company_scope, scoped


@pytest.fixture
def two_companies(import_fixture):
    import_fixture("TJ", "TJ-shared.xlsx")
    import_fixture("QD", "QD-shared.xlsx")
    run_billing("TJ", "2025-2026")
    run_billing("QD", "2025-2026")
    db.session.expire_all()


def test_scope_filters_every_query(two_companies, demo):
    tj, qd = demo["TJ"].id, demo["QD"].id

    with scoped(company_scope(tj)):
        companies = set(db.session.scalars(sa.select(Account.company_id).distinct()))
        entries = set(db.session.scalars(sa.select(LedgerEntry.company_id).distinct()))
        joined = db.session.scalars(
            sa.select(Community.company_id).join(Building, Building.community_id == Community.id).distinct()
        ).all()
        users = set(db.session.scalars(sa.select(User.company_id).distinct()))

    assert companies == {tj}
    assert entries == {tj}
    assert set(joined) == {tj}
    assert users == {tj}
    assert qd not in companies


def test_scope_filters_aliases_and_get(two_companies, demo):
    qd_account_id = db.session.scalar(sa.select(Account.id).filter_by(company_id=demo["QD"].id).limit(1))
    db.session.expire_all()

    with scoped(company_scope(demo["TJ"].id)):
        other = aliased(Account)
        rows = db.session.scalars(sa.select(other.company_id).distinct()).all()
        fetched = db.session.scalar(sa.select(Account).filter_by(id=qd_account_id))

    assert rows == [demo["TJ"].id]
    assert fetched is None


def test_write_to_other_company_rejected(two_companies, demo):
    qd_account = db.session.scalar(sa.select(Account).filter_by(company_id=demo["QD"].id).limit(1))
    area = qd_account.building_area

    with scoped(company_scope(demo["TJ"].id)):
        qd_account.note = "changed by TJ"
        with pytest.raises(TenantScopeError):
            db.session.flush()
        db.session.rollback()

    with scoped(SYSTEM_SCOPE):
        db.session.expire_all()
        assert db.session.get(Account, qd_account.id).note != "changed by TJ"
        assert db.session.get(Account, qd_account.id).building_area == area


def test_bulk_update_stays_in_scope(two_companies, demo):
    with scoped(company_scope(demo["TJ"].id)):
        db.session.execute(sa.update(Account).values(note="bulk"))
        db.session.commit()

    notes = dict(
        db.session.execute(
            sa.select(Account.company_id, sa.func.count(Account.id)).where(Account.note == "bulk").group_by(Account.company_id)
        ).all()
    )
    assert notes == {demo["TJ"].id: 1743}
