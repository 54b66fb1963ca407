"""PostgreSQL row-level security: the database's own copy of the tenant scope.

`app.tenancy` filters ORM queries in Python. This module adds a second wall under it: every
table with a `company_id` column gets policies that compare the column with two settings of
the current transaction, and `install_scope_settings` keeps those settings equal to
`current_scope()` before each statement. A query that bypasses the ORM filter (raw SQL,
`skip_tenant_scope`, a Core statement on `db.engine`) therefore still sees and writes only
the companies of the scope.

The settings hold a comma-separated list of company ids, or `*` for every company (the
system scope and headquarters). Unset or empty means no company, so a connection that
never set them sees no company-owned row. A NULL `company_id` matches only `*`.

RLS binds only roles that are neither superuser nor BYPASSRLS. Tables get FORCE ROW LEVEL
SECURITY, so the policies also bind the table owner; production should still connect the
app as a role that only holds the grants of `grant_app_role`, because an owner can switch
RLS off again.
"""

import sqlalchemy as sa
from sqlalchemy import event

from app.tenancy import current_scope

VISIBLE_SETTING = "heatflow.visible_companies"
WRITABLE_SETTING = "heatflow.writable_companies"
ALL_COMPANIES = "*"
POLICY_PREFIX = "heatflow_tenant_"
# Command → (USING setting, WITH CHECK setting). SELECT follows the visible companies and
# every write the writable ones, as `app.tenancy._check_write_scope` does in Python.
POLICY_COMMANDS = {
    "select": (VISIBLE_SETTING, None),
    "insert": (None, WRITABLE_SETTING),
    "update": (WRITABLE_SETTING, WRITABLE_SETTING),
    "delete": (WRITABLE_SETTING, None),
}
_CACHE_KEY = "heatflow_scope_settings"
SET_SETTINGS_SQL = "SELECT set_config(%s, %s, true), set_config(%s, %s, true)"


def _setting_value(company_ids):
    if company_ids is None:
        return ALL_COMPANIES
    return ",".join(str(company_id) for company_id in sorted(company_ids))


def scope_settings(scope):
    """Return (visible, writable) setting values for a `TenantScope`."""
    return _setting_value(scope.visible), _setting_value(scope.writable)


def _company_match(setting):
    value = f"current_setting('{setting}', true)"
    # Each side is a scalar subquery, so PostgreSQL computes it once per statement (an
    # InitPlan) and not again for every row. Parsing the list per row made a count of
    # 250,000 rows about 4 times slower than this form (benchmarks/rls_policy_forms.py).
    # NULLIF because PostgreSQL may evaluate both sides of OR, and '*' is no integer.
    everything = f"(SELECT {value} = '{ALL_COMPANIES}')"
    # The integer cast stays inside the subquery so it runs once too. The outer cast only
    # makes ANY read the subquery's one value as an array, not as a set of rows.
    parsed = f"string_to_array(NULLIF({value}, '{ALL_COMPANIES}'), ',')::integer[]"
    listed = f"company_id = ANY (CAST((SELECT {parsed}) AS integer[]))"
    return f"({everything} OR {listed})"


def policy_statements(table):
    """Return the SQL that puts `table` under row-level security with one policy per command."""
    statements = [
        f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY',
        f'ALTER TABLE "{table}" FORCE ROW LEVEL SECURITY',
    ]
    for command, (using, check) in POLICY_COMMANDS.items():
        name = f"{POLICY_PREFIX}{command}"
        clauses = ""
        if using:
            clauses += f" USING {_company_match(using)}"
        if check:
            clauses += f" WITH CHECK {_company_match(check)}"
        statements.append(f'DROP POLICY IF EXISTS {name} ON "{table}"')
        statements.append(f'CREATE POLICY {name} ON "{table}" FOR {command.upper()}{clauses}')
    return statements


def company_owned_tables(connection):
    """Return the names of the tables in the current schema that have a `company_id` column."""
    rows = connection.execute(
        sa.text(
            "SELECT c.table_name FROM information_schema.columns c"
            " JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name"
            " WHERE c.table_schema = current_schema() AND c.column_name = 'company_id' AND t.table_type = 'BASE TABLE'"
            " ORDER BY c.table_name"
        )
    )
    return [row[0] for row in rows]


def sync_row_level_security(connection):
    """Create or refresh the tenant policies on every table with a `company_id` column.

    Reads the tables from the database catalog, so each migration covers exactly the
    schema it leaves behind. Idempotent; does nothing on SQLite. Returns the table names.
    """
    if connection.dialect.name != "postgresql":
        return []
    tables = company_owned_tables(connection)
    for table in tables:
        for statement in policy_statements(table):
            connection.execute(sa.text(statement))
    return tables


def missing_policies(connection):
    """Return (number of tables with every tenant policy, names of tables with company_id that lack one)."""
    expected = {POLICY_PREFIX + command for command in POLICY_COMMANDS}
    rows = connection.execute(
        sa.text(
            "SELECT c.relname, c.relrowsecurity AND c.relforcerowsecurity,"
            " array(SELECT p.polname FROM pg_policy p WHERE p.polrelid = c.oid)"
            " FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'"
        )
    ).all()
    state = {name: forced and expected <= set(policies) for name, forced, policies in rows}
    tables = company_owned_tables(connection)
    missing = [table for table in tables if not state.get(table)]
    return len(tables) - len(missing), missing


def grant_app_role(connection, role):
    """Grant `role` read and write access to every table and sequence, and nothing more.

    Run as the owner after each migration. The role gets no DDL rights and cannot switch
    row-level security off, because only the owner can.
    """
    quoted = connection.dialect.identifier_preparer.quote(role)
    connection.execute(sa.text(f"GRANT USAGE ON SCHEMA public TO {quoted}"))
    connection.execute(sa.text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}"))
    connection.execute(sa.text(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {quoted}"))


def role_bypasses_rls(connection):
    """Return True when the connected role is a superuser or has BYPASSRLS, so no policy binds it."""
    return bool(connection.execute(sa.text("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")).scalar())


def _forget_settings(conn, *args):
    # An invalidated connection (the server ended it) cannot be read; its settings went with it.
    if conn.invalidated:
        return
    conn.info.pop(_CACHE_KEY, None)


# Savepoint statements need no tenant settings. After a failed statement PostgreSQL accepts
# nothing but ROLLBACK (TO SAVEPOINT), so sending the settings before it would fail it.
_SAVEPOINT_STATEMENTS = ("SAVEPOINT ", "RELEASE SAVEPOINT ", "ROLLBACK TO SAVEPOINT ")


def _apply_scope_settings(conn, cursor, statement, parameters, context, executemany):
    if statement.startswith(_SAVEPOINT_STATEMENTS):
        return
    expected = scope_settings(current_scope())
    if conn.info.get(_CACHE_KEY) == expected:
        return
    # A separate client cursor, so a server-side cursor of the statement itself is untouched.
    with cursor.connection.cursor() as setter:
        setter.execute(SET_SETTINGS_SQL, (VISIBLE_SETTING, expected[0], WRITABLE_SETTING, expected[1]))
    conn.info[_CACHE_KEY] = expected


def install_scope_settings(engine):
    """Keep the tenant settings of every PostgreSQL transaction of `engine` equal to `current_scope()`.

    The settings are transaction-local (`set_config(..., true)`), so they end with each
    commit or rollback and a pooled connection never carries a scope into the next request.
    They are sent before a statement only when the scope differs from what this transaction
    already holds, which is usually once per transaction.
    """
    if engine.dialect.name != "postgresql" or event.contains(engine, "before_cursor_execute", _apply_scope_settings):
        return
    event.listen(engine, "before_cursor_execute", _apply_scope_settings)
    # A new transaction starts without settings, and rolling back a savepoint can undo them.
    for name in ("begin", "commit", "rollback", "rollback_savepoint"):
        event.listen(engine, name, _forget_settings)
