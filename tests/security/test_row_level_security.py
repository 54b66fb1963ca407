"""PostgreSQL row-level security: raw SQL without a company filter still stays in the scope.

The app fixture connects to PostgreSQL as a role without superuser or BYPASSRLS, so these
statements pass through the policies of app/rls.py exactly as the app's own do. Every
statement here is plain SQL or runs with `skip_tenant_scope`, so the ORM filter of
app/tenancy.py is out of the way and only the database can stop it.
"""

import psycopg
import pytest
import sqlalchemy as sa

from app.extensions import db
from app.network.models import Account
from app.rls import POLICY_COMMANDS, POLICY_PREFIX, company_owned_tables, role_bypasses_rls, scope_settings, sync_row_level_security
from app.tenancy import SYSTEM_SCOPE, TenantScope, company_scope, scoped
from tests.conftest import POSTGRES_APP_ROLE

HQ_READ_ONLY = TenantScope(visible=None, writable=frozenset(), label="hq-read-only")


@pytest.fixture
def postgres_only(backend):
    if backend != "postgres":
        pytest.skip("row-level security exists on PostgreSQL only")


@pytest.fixture
def two_companies(postgres_only, import_fixture, demo):
    import_fixture("TJ", "TJ-shared.xlsx")
    import_fixture("QD", "QD-shared.xlsx")
    db.session.commit()
    return demo["TJ"].id, demo["QD"].id


def _raw_company_ids(table):
    return set(db.session.execute(sa.text(f'SELECT DISTINCT company_id FROM "{table}"')).scalars())


def test_every_company_table_has_policies(postgres_only, app_ctx):
    model_tables = {table.name for table in db.metadata.sorted_tables if "company_id" in table.c}
    catalog_tables = set(company_owned_tables(db.session.connection()))
    rows = db.session.execute(
        sa.text(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,"
            " array(SELECT p.polname FROM pg_policy p WHERE p.polrelid = c.oid ORDER BY p.polname)"
            " FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'"
        )
    ).all()
    by_table = {name: (enabled, forced, set(policies)) for name, enabled, forced, policies in rows}
    expected_policies = {POLICY_PREFIX + command for command in POLICY_COMMANDS}

    assert len(model_tables) > 50
    assert model_tables == catalog_tables
    for table in sorted(model_tables):
        enabled, forced, policies = by_table[table]
        assert enabled, f"row-level security is off on {table}"
        assert forced, f"row-level security is not forced on {table}"
        assert policies == expected_policies, f"{table} has policies {sorted(policies)}"
    for table in ("company", "group", "login_throttle"):
        assert by_table[table][0] is False, f"{table} has no company_id and must stay readable"


def test_app_role_cannot_bypass_policies(postgres_only, app_ctx):
    connection = db.session.connection()

    assert role_bypasses_rls(connection) is False
    owner = connection.execute(sa.text("SELECT tableowner FROM pg_tables WHERE tablename = 'account'")).scalar()
    assert owner != connection.execute(sa.text("SELECT current_user")).scalar()


def test_raw_select_sees_only_scope(two_companies):
    tj, qd = two_companies

    with scoped(company_scope(tj)):
        accounts = _raw_company_ids("account")
        communities = _raw_company_ids("community")
        users = _raw_company_ids("user")
        orm_unfiltered = set(
            db.session.scalars(sa.select(Account.company_id).distinct().execution_options(skip_tenant_scope=True))
        )
        qd_rows = db.session.execute(sa.text("SELECT count(*) FROM account WHERE company_id = :qd"), {"qd": qd}).scalar()

    assert accounts == {tj}
    assert communities == {tj}
    assert users == {tj}
    assert orm_unfiltered == {tj}
    assert qd_rows == 0


def test_core_connection_follows_scope(two_companies):
    tj, qd = two_companies

    with scoped(company_scope(qd)):
        with db.engine.connect() as connection:
            seen = set(connection.execute(sa.text("SELECT DISTINCT company_id FROM account")).scalars())

    assert seen == {qd}


def test_system_and_hq_scopes_see_all(two_companies):
    tj, qd = two_companies

    with scoped(SYSTEM_SCOPE):
        system_seen = _raw_company_ids("account")
    with scoped(HQ_READ_ONLY):
        hq_seen = _raw_company_ids("account")

    assert system_seen == {tj, qd}
    assert hq_seen == {tj, qd}


def test_scope_change_inside_transaction(two_companies):
    tj, qd = two_companies

    with scoped(company_scope(tj)):
        first = _raw_company_ids("account")
        with scoped(company_scope(qd)):
            nested = _raw_company_ids("account")
        again = _raw_company_ids("account")

    assert first == {tj}
    assert nested == {qd}
    assert again == {tj}


def test_raw_insert_of_other_company_rejected(two_companies):
    tj, qd = two_companies

    with scoped(company_scope(tj)):
        with pytest.raises(sa.exc.ProgrammingError) as raised:
            db.session.execute(
                sa.text("INSERT INTO community (company_id, code, name) VALUES (:qd, '9999', 'TJ plants a QD row')"),
                {"qd": qd},
            )
        db.session.rollback()

    assert isinstance(raised.value.orig, psycopg.errors.InsufficientPrivilege)
    assert "row-level security" in str(raised.value.orig)
    with scoped(SYSTEM_SCOPE):
        assert db.session.execute(sa.text("SELECT count(*) FROM community WHERE code = '9999'")).scalar() == 0


def test_raw_update_of_other_company_changes_nothing(two_companies):
    tj, qd = two_companies
    with scoped(SYSTEM_SCOPE):
        qd_names = db.session.execute(sa.text("SELECT id, name FROM community WHERE company_id = :qd"), {"qd": qd}).all()

    with scoped(company_scope(tj)):
        updated = db.session.execute(sa.text("UPDATE community SET name = name || ' (TJ)' WHERE company_id = :qd"), {"qd": qd})
        deleted = db.session.execute(sa.text("DELETE FROM ledger_entry WHERE company_id = :qd"), {"qd": qd})
        db.session.commit()

    assert updated.rowcount == 0
    assert deleted.rowcount == 0
    with scoped(SYSTEM_SCOPE):
        after = db.session.execute(sa.text("SELECT id, name FROM community WHERE company_id = :qd"), {"qd": qd}).all()
    assert sorted(after) == sorted(qd_names)
    assert len(qd_names) > 0


def test_raw_move_into_other_company_rejected(two_companies):
    tj, qd = two_companies

    with scoped(company_scope(tj)):
        with pytest.raises(sa.exc.ProgrammingError) as raised:
            db.session.execute(sa.text("UPDATE community SET company_id = :qd"), {"qd": qd})
        db.session.rollback()

    assert isinstance(raised.value.orig, psycopg.errors.InsufficientPrivilege)
    with scoped(SYSTEM_SCOPE):
        assert _raw_company_ids("community") == {tj, qd}


def test_read_only_scope_cannot_write(two_companies):
    tj, qd = two_companies

    with scoped(HQ_READ_ONLY):
        updated = db.session.execute(sa.text("UPDATE account SET note = 'hq' WHERE company_id = :tj"), {"tj": tj})
        db.session.commit()

    assert updated.rowcount == 0
    with scoped(SYSTEM_SCOPE):
        assert db.session.execute(sa.text("SELECT count(*) FROM account WHERE note = 'hq'")).scalar() == 0


def test_connection_without_settings_sees_nothing(two_companies):
    # A DBAPI connection taken past SQLAlchemy's events never sets the scope: fail closed.
    raw = db.engine.raw_connection()
    try:
        with raw.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM account")
            unset_count = cursor.fetchone()[0]
            cursor.execute("SELECT set_config('heatflow.visible_companies', '', true)")
            cursor.execute("SELECT count(*) FROM account")
            empty_count = cursor.fetchone()[0]
    finally:
        raw.rollback()
        raw.close()

    assert unset_count == 0
    assert empty_count == 0


def test_policy_sync_is_idempotent(postgres_only, app, database_owner_url):
    engine = sa.create_engine(database_owner_url)
    try:
        with engine.begin() as connection:
            first = sync_row_level_security(connection)
            second = sync_row_level_security(connection)
    finally:
        engine.dispose()

    assert first == second
    assert "account" in first


def test_scope_settings_values():
    assert scope_settings(SYSTEM_SCOPE) == ("*", "*")
    assert scope_settings(company_scope(7)) == ("7", "7")
    assert scope_settings(TenantScope(visible=frozenset({3, 1}), writable=frozenset())) == ("1,3", "")
    assert scope_settings(HQ_READ_ONLY) == ("*", "")


def test_rls_check_command_passes(postgres_only, app_ctx):
    result = app_ctx.test_cli_runner().invoke(args=["heat", "rls", "check"])

    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: ")
    assert f"{len(company_owned_tables(db.session.connection()))} tables" in result.output


def test_rls_check_command_finds_missing_policy(postgres_only, app_ctx, owner_engine):
    with owner_engine.begin() as connection:
        connection.execute(sa.text(f"DROP POLICY {POLICY_PREFIX}select ON community"))
    try:
        result = app_ctx.test_cli_runner().invoke(args=["heat", "rls", "check"])
    finally:
        with owner_engine.begin() as connection:
            sync_row_level_security(connection)

    assert result.exit_code == 1
    assert "table community has company_id but lacks tenant policies" in result.stderr


def test_rls_grant_command_as_owner(postgres_only, app_ctx, database_owner_url):
    from app import create_app
    from app.celery_app import init_celery

    owner_app = create_app({"SQLALCHEMY_DATABASE_URI": database_owner_url}, config_name="testing")
    try:
        # The CLI runs in the innermost app context, so push the owner's over the test's.
        with owner_app.app_context():
            result = owner_app.test_cli_runner().invoke(args=["heat", "rls", "grant", POSTGRES_APP_ROLE])
            checked = owner_app.test_cli_runner().invoke(args=["heat", "rls", "check"])
            db.engine.dispose()
    finally:
        init_celery(app_ctx)

    assert result.exit_code == 0, result.output
    assert "tables under row-level security" in result.output
    # The owner here is the postgres superuser, which no policy binds.
    assert checked.exit_code == 1
    assert "is a superuser or has BYPASSRLS" in checked.stderr
