"""Fixtures of the invoice tests: the e-invoice vendor simulator and companies configured for it."""

from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.invoicing.models import InvoiceProfile
from app.org.models import User
from tests.processes.conftest import make_account  # noqa: F401  (fixture)
from tools.einvoice_simulator import EinvoiceSimulator

APP_KEY = "SIMKEY0001"
APP_SECRET = "sim-secret-0001"
TJ_TAX_ID = "91120112MA05TJ0001"


@pytest.fixture
def vendor():
    """The vendor simulator on a free port with results at once and no random failures."""
    sim = EinvoiceSimulator(APP_KEY, APP_SECRET, delay_seconds=0.0, failure_rate=0.0, unavailable_rate=0.0, seed=7)
    sim.start(0)
    yield sim
    sim.stop()


@pytest.fixture
def einvoicing(app, demo, vendor, monkeypatch):
    """TJ (e-invoice mode) with a seller tax id and the app pointed at the simulator."""
    for name, value in {
        "EINVOICE_API_BASE": vendor.services_url, "EINVOICE_APP_KEY": APP_KEY, "EINVOICE_APP_SECRET": APP_SECRET,
        "EINVOICE_RETRY_BASE_SECONDS": 0.0,
    }.items():
        monkeypatch.setitem(app.config, name, value)
    db.session.add(InvoiceProfile(company_id=demo["TJ"].id, seller_tax_id=TJ_TAX_ID, vat_rate=Decimal("0.09"), residential_exempt=True))
    db.session.commit()
    return vendor


@pytest.fixture
def staff(demo):
    """Look up a demo user by login name."""

    def _user(username):
        return db.session.scalar(sa.select(User).filter_by(username=username))

    return _user
