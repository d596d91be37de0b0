"""The OpenAPI document of the JSON API, for the clinic's developers and their tools."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from . import api_document

bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json")
def document() -> Response:
    """Serve the OpenAPI description of /api/enquiries and /altcha/challenge."""
    response = jsonify(api_document.build())
    # Cached like embed.js: it changes only with a release.
    response.cache_control.public = True
    response.cache_control.max_age = 3600
    response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    # CORS for the allowed sites comes from origins.add_cors_headers, as for the API itself.
    return response
