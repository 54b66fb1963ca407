"""Row ids sent in forms and query strings."""

# Largest id an integer primary key holds; app.web.BoundedIntConverter bounds URL ids the same way.
MAX_ROW_ID = 2**31 - 1


def parse_row_id(value):
    """Return the row id written in `value`, or None when it is no whole number from 1 to MAX_ROW_ID.

    Only ASCII digits count, because str.isdigit() also accepts characters such as "²"
    that int() rejects, and a larger number overflows the database's integer parameters.
    """
    text = str(value if value is not None else "").strip()
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_ROW_ID)):
        return None
    number = int(text)
    return number if 1 <= number <= MAX_ROW_ID else None
