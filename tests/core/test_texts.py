"""The one rule for required free texts: no visible character means empty."""

import pytest

from app.texts import clean_text, visible_length


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "\u200b", "\ufeff", "\xa0", "\u3000", "\u2800", "\u3164", "\u200e\u200f", "\t\n", "\ufe0f", " \u0301 "],
)
def test_invisible_text_is_empty(value):
    assert clean_text(value) == ""


@pytest.mark.parametrize(
    "value, expected",
    [
        ("用户撤回", "用户撤回"),
        ("\ufeff\u200b用户撤回\u3000\xa0", "用户撤回"),
        ("  a\u200bb  ", "a\u200bb"),
        ("e\u0301", "e\u0301"),
        (123, "123"),
    ],
)
def test_visible_text_trimmed(value, expected):
    assert clean_text(value) == expected


def test_visible_length_skips_invisible():
    assert visible_length("无\u200b\u200b\u200b") == 1
    assert visible_length("用户去世") == 4
