"""The message catalog: every area has the same keys in both languages, placeholders agree, and the
language negotiation picks what a browser or `--lang` asks for."""

from __future__ import annotations

import json
import string
from importlib import resources

import pytest

from gateway import i18n
from gateway.i18n import Lang, MissingMessage, negotiate, translate


def _load(area: str, lang: Lang) -> dict[str, str]:
    entry = resources.files(i18n) / f"{area}.{lang.value}.json"
    return json.loads(entry.read_text(encoding="utf-8"))


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


@pytest.mark.parametrize("area", i18n.areas())
def test_every_area_has_the_same_keys_and_placeholders_in_every_language(area: str) -> None:
    chinese, english = _load(area, Lang.ZH), _load(area, Lang.EN)
    assert set(chinese) == set(english), f"{area}: keys differ between zh-CN and en"
    for key, text in chinese.items():
        assert _fields(text) == _fields(english[key]), f"{area}.{key}: placeholders differ"
        assert text.strip() and english[key].strip(), f"{area}.{key}: empty message"


def test_translate_fills_placeholders_and_refuses_unknown_keys() -> None:
    assert translate("common.product", Lang.EN) == "fedgate data federation gateway"
    assert translate("common.product") == translate("common.product", Lang.ZH)
    assert translate("common.language", "en-GB") == "Language"
    with pytest.raises(MissingMessage):
        translate("common.no_such_message", Lang.EN)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, Lang.ZH),
        ("", Lang.ZH),
        ("en", Lang.EN),
        ("en-US,en;q=0.9", Lang.EN),
        ("fr-FR, en;q=0.5, zh;q=0.8", Lang.ZH),
        ("zh-CN", Lang.ZH),
        ("de", Lang.ZH),
        ("en;q=bad, zh;q=0.1", Lang.ZH),
    ],
)
def test_negotiate_picks_the_best_supported_language(header: str | None, expected: Lang) -> None:
    assert negotiate(header) is expected
