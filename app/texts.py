"""Free texts that a user must fill in: reasons, comments, notes and names.

Every form, API call and CLI command cleans such a text with clean_text and treats the
empty result as missing. A text counts as empty when it has no visible character, so a
reason made of a zero-width space (U+200B), a byte-order mark (U+FEFF), a no-break space
(U+00A0) or a full-width space (U+3000) is rejected like a blank one.
"""

import unicodedata

from app.spreadsheet import is_invisible

# Characters that draw nothing although Unicode gives them a visible category.
BLANK_SYMBOLS = frozenset("\u2800")


def is_blank(character):
    """Return whether `character` shows as nothing or as a space."""
    return character.isspace() or is_invisible(character) or character in BLANK_SYMBOLS


def _is_mark(character):
    return unicodedata.category(character) in ("Mn", "Me")


def clean_text(value):
    """Return `value` without blanks and invisible characters at either end, or '' when no visible character remains.

    A text of combining marks alone (for example U+FE0F or U+0301) also counts as empty,
    because the marks have no base character to draw on.
    """
    text = "" if value is None else str(value)
    start, end = 0, len(text)
    while start < end and is_blank(text[start]):
        start += 1
    while end > start and is_blank(text[end - 1]):
        end -= 1
    text = text[start:end]
    if all(is_blank(c) or _is_mark(c) for c in text):
        return ""
    return text


def visible_length(text):
    """Return the number of characters of `text` that are neither blank nor invisible."""
    return sum(1 for c in text if not is_blank(c))
