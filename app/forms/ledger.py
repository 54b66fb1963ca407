"""Forms of the ledger feature."""

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileAllowed, FileField, FileRequired


class LedgerUploadForm(FlaskForm):
    """One .xlsx ledger file."""

    file = FileField(
        _l("台账文件（.xlsx）"),
        validators=[FileRequired(message=_l("请选择台账文件。")), FileAllowed(["xlsx"], message=_l("只接受 Excel .xlsx 文件。"))],
    )
