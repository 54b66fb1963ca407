"""Tenant scope: which companies the current request, command or task may read and write.

Every ORM query passes through `_apply_read_scope`, which adds `company_id IN (...)` to
each company-owned entity; every flush passes through `_check_write_scope`, which rejects
a new, changed or deleted row of a company outside the writable set. Views never filter
by company themselves.
"""

import contextlib
import contextvars
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, declared_attr, with_loader_criteria


class TenantScopeError(PermissionError):
    """A row of a company outside the current scope was about to be written."""


@dataclass(frozen=True)
class TenantScope:
    """Visible and writable company ids; None means every company."""

    visible: frozenset | None
    writable: frozenset | None
    label: str = ""

    def can_see(self, company_id):
        return self.visible is None or company_id in self.visible

    def can_write(self, company_id):
        return self.writable is None or company_id in self.writable


SYSTEM_SCOPE = TenantScope(visible=None, writable=None, label="system")
_current_scope = contextvars.ContextVar("tenant_scope", default=SYSTEM_SCOPE)


def current_scope():
    """Return the scope of the running request, command or task."""
    return _current_scope.get()


def set_scope(scope):
    """Set the scope for the rest of this context (a request or a task)."""
    _current_scope.set(scope)


@contextlib.contextmanager
def scoped(scope):
    """Run a block under `scope`, restoring the previous scope after it."""
    token = _current_scope.set(scope)
    try:
        yield scope
    finally:
        _current_scope.reset(token)


def company_scope(company_id, label=""):
    """A scope that sees and writes one company only."""
    ids = frozenset([company_id])
    return TenantScope(visible=ids, writable=ids, label=label or f"company:{company_id}")


def reading_every_company():
    """Return a scope that reads every company and writes only what the current scope writes.

    For the few group-wide rows every company reads, such as the group's process templates.
    """
    scope = current_scope()
    return TenantScope(visible=None, writable=scope.writable, label=f"{scope.label}+read-all")


class CompanyOwned:
    """Mixin for tables whose rows belong to one company (the tenant)."""

    @declared_attr
    def company_id(cls):
        return sa.Column(sa.Integer, sa.ForeignKey("company.id"), nullable=False, index=True)


@event.listens_for(Session, "do_orm_execute")
def _apply_read_scope(execute_state):
    scope = current_scope()
    if scope.visible is None:
        return
    if not (execute_state.is_select or execute_state.is_update or execute_state.is_delete):
        return
    if execute_state.execution_options.get("skip_tenant_scope"):
        return
    visible = tuple(sorted(scope.visible))
    execute_state.statement = execute_state.statement.options(
        with_loader_criteria(
            CompanyOwned,
            lambda cls: cls.company_id.in_(visible),
            include_aliases=True,
        )
    )


@event.listens_for(Session, "before_flush")
def _check_write_scope(session, flush_context, instances):
    scope = current_scope()
    if scope.writable is None:
        return
    for obj in list(session.new) + list(session.dirty) + list(session.deleted):
        if not isinstance(obj, CompanyOwned):
            continue
        company_id = obj.company_id
        if company_id is None or not scope.can_write(company_id):
            raise TenantScopeError(
                f"{type(obj).__name__} of company {company_id} is outside the writable companies of {scope.label}."
            )
        if obj in session.dirty:
            history = sa.inspect(obj).attrs.company_id.history
            if history.deleted and any(not scope.can_write(old) for old in history.deleted if old is not None):
                raise TenantScopeError(f"{type(obj).__name__} cannot be moved out of another company.")
