"""Flask extension objects, created once and bound in the app factory."""

from celery import Celery
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import MetaData

# Named constraints keep Alembic migrations identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

db = SQLAlchemy(metadata=MetaData(naming_convention=NAMING_CONVENTION))
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
celery = Celery(
    "heatflow", task_cls="app.celery_app:AppContextTask",
    include=[
        "app.tasks.ledger", "app.tasks.billing", "app.tasks.processes", "app.tasks.invoicing", "app.tasks.reconciliation",
        "app.tasks.payments", "app.tasks.outbox",
    ],
)
