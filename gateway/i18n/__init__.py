"""One message catalog for everything a person reads: the console, the command line, column headers.

    Lang                       the supported languages; zh-CN is the default (county staff read Chinese)
    translate(key, lang, **p)  the message for `key` in `lang`, with `{name}` placeholders filled from `p`
    negotiate(accept)          the best Lang for an Accept-Language header (or a `--lang` value)

Messages live in JSON files beside this module, one per area and language (`<area>.<lang>.json`, e.g.
`console.zh-CN.json`, `cli.en.json`); a key is `<area>.<name>`. Every area has the same keys in every
language (`tests/test_i18n.py`), so a missing translation fails the tests rather than showing a raw key.
"""

from __future__ import annotations

import json
from enum import StrEnum
from functools import cache
from importlib import resources

__all__ = ["Lang", "MissingMessage", "areas", "catalog", "negotiate", "translate"]


class Lang(StrEnum):
    ZH = "zh-CN"
    EN = "en"


DEFAULT_LANG = Lang.ZH


class MissingMessage(KeyError):
    """A key with no message in the catalog: a defect in the code that asked for it."""


@cache
def areas() -> tuple[str, ...]:
    """The catalog's areas (file name stems before the language), sorted."""
    names = {
        entry.name.split(".", 1)[0]
        for entry in resources.files(__name__).iterdir()
        if entry.name.endswith(".json")
    }
    return tuple(sorted(names))


@cache
def catalog(lang: Lang) -> dict[str, str]:
    """Every message in `lang`, keyed `<area>.<name>`."""
    messages: dict[str, str] = {}
    for area in areas():
        entry = resources.files(__name__) / f"{area}.{lang.value}.json"
        if not entry.is_file():
            continue
        for name, text in json.loads(entry.read_text(encoding="utf-8")).items():
            messages[f"{area}.{name}"] = text
    return messages


def translate(key: str, lang: Lang | str = DEFAULT_LANG, /, **params: object) -> str:
    """The message for `key` in `lang`, placeholders filled; `MissingMessage` if the key is unknown."""
    chosen = negotiate(lang) if isinstance(lang, str) and not isinstance(lang, Lang) else lang
    try:
        text = catalog(Lang(chosen))[key]
    except KeyError:
        raise MissingMessage(key) from None
    return text.format(**params) if params else text


def negotiate(accept: str | None) -> Lang:
    """The best supported language for an Accept-Language header or a plain tag; zh-CN when none fits."""
    if not accept:
        return DEFAULT_LANG
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        ranked.append((-quality, position, tag.strip().lower()))
    for _, _, tag in sorted(ranked):
        if tag.startswith("zh"):
            return Lang.ZH
        if tag.startswith("en"):
            return Lang.EN
    return DEFAULT_LANG
