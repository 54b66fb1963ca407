"""Forms of the ledger feature."""

from flask_wtf import FlaskForm
from flask_wtf.file import FileAllowed, FileField, FileRequired


class LedgerUploadForm(FlaskForm):
    """One .xlsx ledger file."""

    file = FileField(
        "台账文件（.xlsx）",
        validators=[FileRequired(message="请选择台账文件。"), FileAllowed(["xlsx"], message="只接受 Excel .xlsx 文件。")],
    )
