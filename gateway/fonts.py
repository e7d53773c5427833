"""The font charts use for Chinese labels (village names, 全县/城镇/农村, Chinese titles).

Matplotlib's own DejaVu Sans has no CJK glyphs: a Chinese label would be drawn as empty boxes with a
"missing glyph" warning. `cjk_font()` finds a CJK font in this order:

1. `FEDGATE_PLOT_FONT`: a font file (`.ttf`, `.otf`, `.ttc`) or an installed family name;
2. the Debian packages the Makefile installs (`fonts-wqy-microhei`, else `fonts-noto-cjk`);
3. any installed family matplotlib knows by one of the names in `CJK_FAMILIES`.

When none is found, `cjk_font()` returns None and charts fall back to English labels and codes
(`chart_language`), saying so once with the fix, so a chart never shows boxes for Chinese text.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from gateway.i18n import Lang

__all__ = ["CJK_FAMILIES", "FONT_ENV", "chart_language", "cjk_font", "font_families"]

FONT_ENV = "FEDGATE_PLOT_FONT"
DEBIAN_FONT_FILES = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
)
CJK_FAMILIES = ("WenQuanYi Micro Hei", "Noto Sans CJK SC", "Source Han Sans SC", "SimHei", "Microsoft YaHei")


def _family_of_file(path: Path) -> str | None:
    from matplotlib import font_manager

    try:
        font_manager.fontManager.addfont(str(path))
        return font_manager.FontProperties(fname=str(path)).get_name()
    except (OSError, RuntimeError, ValueError):
        return None


@cache
def cjk_font() -> str | None:
    """The family name of a CJK font matplotlib can draw with, or None if there is none."""
    from matplotlib import font_manager

    configured = os.environ.get(FONT_ENV, "").strip()
    if configured:
        path = Path(configured)
        if path.is_file():
            return _family_of_file(path)
        known = {f.name for f in font_manager.fontManager.ttflist}
        return configured if configured in known else None
    for path in DEBIAN_FONT_FILES:
        if path.is_file():
            family = _family_of_file(path)
            if family:
                return family
    known = {f.name for f in font_manager.fontManager.ttflist}
    return next((family for family in CJK_FAMILIES if family in known), None)


def font_families() -> list[str]:
    """`font.family` for a chart: the CJK font first (it has Latin glyphs too), DejaVu Sans after it."""
    family = cjk_font()
    return [family, "DejaVu Sans"] if family else ["DejaVu Sans"]


def chart_language(lang: Lang | str) -> Lang:
    """The language a chart can be labelled in: Chinese only where a CJK font is there to draw it."""
    wanted = Lang(lang) if not isinstance(lang, Lang) else lang
    return wanted if wanted is not Lang.ZH or cjk_font() else Lang.EN


NO_FONT_HINT = (
    f"no CJK font found: the chart is labelled in English. Install fonts-wqy-microhei (make install does) "
    f"or set {FONT_ENV} to a .ttf/.otf/.ttc file / 未找到中文字体，图表改用英文标注"
)
