"""Calculation options each company chooses for its processes, with the group's defaults."""

from dataclasses import dataclass

import sqlalchemy as sa

from app.extensions import db
from app.i18n import N_
from app.processes.models import ProcessOption


@dataclass(frozen=True)
class OptionSpec:
    label: str
    # value -> Chinese description shown on the settings page
    choices: dict
    default: str


PROCESS_OPTIONS = {
    "back_charge_netting": OptionSpec(
        label=N_("稽查追补计算方式"),
        choices={
            "difference": N_("按差额追补：（正常热费 − 当前状态热费）× 追补天数 ÷ 法定供暖天数"),
            "full": N_("按全额追补：正常热费 × 追补天数 ÷ 法定供暖天数，已收的报停或强停费用不抵扣"),
        },
        default="difference",
    ),
}


def process_option(company_id, key):
    """Return the company's value of option `key`, or the group default when it has not chosen one."""
    spec = PROCESS_OPTIONS[key]
    value = db.session.scalar(
        sa.select(ProcessOption.value).where(ProcessOption.company_id == company_id, ProcessOption.option_key == key)
    )
    return value if value in spec.choices else spec.default


def option_rows(company_id):
    """Return (key, OptionSpec, current value) for every option, for the settings page."""
    return [(key, spec, process_option(company_id, key)) for key, spec in PROCESS_OPTIONS.items()]
