"""What a site needs to embed the form: the script loader and the theme stylesheet."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from . import theme

bp = Blueprint("embed", __name__)


@bp.get("/embed.js")
def loader() -> Response:
    """The loader a site pastes: it puts the form in an iframe and keeps it the right height."""
    response = current_app.send_static_file("embed.js")
    response.headers["Content-Type"] = "text/javascript; charset=utf-8"
    # Short caching: a fix to the loader reaches every site within the hour.
    response.cache_control.no_cache = None
    response.cache_control.public = True
    response.cache_control.max_age = 3600
    # Sites that isolate themselves (Cross-Origin-Embedder-Policy) may still load it.
    response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    return response


@bp.get("/theme.css")
def theme_stylesheet() -> Response:
    """The THEME_* settings as CSS custom properties, loaded after form.css."""
    response = Response(theme.stylesheet(current_app.config), mimetype="text/css")
    response.cache_control.public = True
    response.cache_control.max_age = 300
    return response
