"""Theming without editing templates: THEME_* settings become CSS custom properties."""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import urlsplit

from config import ConfigurationError

from . import origins

# Setting -> the custom property of form.css it sets.
PROPERTIES = {
    "THEME_FONT": "--form-font",
    "THEME_TEXT": "--form-text",
    "THEME_BACKGROUND": "--form-background",
    "THEME_ACCENT": "--form-accent",
    "THEME_ACCENT_TEXT": "--form-accent-text",
    "THEME_ERROR": "--form-error",
    "THEME_BORDER": "--form-border",
    "THEME_RADIUS": "--form-radius",
}
# Colours, lengths, font lists and functions like rgb(...); nothing that can end a declaration.
SAFE_VALUE = re.compile(r"""[\w\s#%.,()'"+-]{1,200}""")


def check(config: MutableMapping[str, Any]) -> None:
    """Refuse theme values that could break out of CSS; note the stylesheet's origin for the CSP."""
    for name in PROPERTIES:
        value = config.get(name)
        if value and not SAFE_VALUE.fullmatch(value):
            raise ConfigurationError(
                f"{name} may contain only letters, digits, spaces and "
                f"# % . , ( ) ' \" + -: {value!r}."
            )
    stylesheet = config.get("THEME_STYLESHEET")
    config["THEME_STYLESHEET_ORIGIN"] = None
    if stylesheet:
        parts = urlsplit(stylesheet)
        origin = origins.normalise(f"{parts.scheme}://{parts.netloc}")
        if origin is None or origin not in config["ALLOWED_ORIGINS"]:
            raise ConfigurationError(
                "THEME_STYLESHEET must be an https:// or http:// URL on one of ALLOWED_ORIGINS, "
                f"not {stylesheet!r}."
            )
        config["THEME_STYLESHEET_ORIGIN"] = origin


def stylesheet(config: MutableMapping[str, Any]) -> str:
    """The CSS that sets the configured custom properties (empty when nothing is themed)."""
    lines = [f"  {prop}: {config[name]};" for name, prop in PROPERTIES.items() if config.get(name)]
    if not lines:
        return "/* No THEME_* settings: form.css defaults apply. */\n"
    return ":root {\n" + "\n".join(lines) + "\n}\n"
