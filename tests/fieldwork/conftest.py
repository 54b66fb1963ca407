"""Fixtures of the field-work tests: the process test accounts and a suspension waiting for its valve."""

import io
import struct
import zlib

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.processes.models import ProcessInstance
from tests.processes.conftest import make_account, open_task, start_request, submit_task  # noqa: F401


def png_bytes(width=2, height=2):
    """A valid PNG image of `width` × `height` grey pixels, as a phone camera might send."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def photo(name="valve.png"):
    return (io.BytesIO(png_bytes()), name)


@pytest.fixture
def valve_task(demo, make_account, login):
    """A residential TJ suspension approved by the company, its 关栓 task open; returns (account, instance, task)."""
    account = make_account("TJ", "87.35")
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    instance = db.session.scalar(sa.select(ProcessInstance).where(ProcessInstance.account_id == account.id))
    approval = open_task(instance.id, "company_approval")
    assert submit_task(login("tj_approver"), approval.id, {"decision": "approve"}).status_code == 302
    return account, instance, open_task(instance.id, "valve_close")
