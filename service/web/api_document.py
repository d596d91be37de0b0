"""The OpenAPI 3.1 description of the JSON API, built from the limits and texts it enforces."""

from __future__ import annotations

from typing import Any

from ..intake import body_checks, captcha, traps, validation
from ..intake.captcha import altcha_proof, third_party
from . import origins

Schema = dict[str, Any]

IDEMPOTENCY_KEY_MAX = 200
EMAIL_MAX = 254  # RFC 5321's limit on a whole address, which email-validator enforces


def _text(description: str, **limits: Any) -> Schema:
    return {"type": "string", "description": description, **limits}


# Optional text fields read besides the required ones; another is one more entry here.
OPTIONAL_FIELDS: dict[str, Schema] = {
    "page": _text(
        "The address of the page the form was on; kept only if it is a plain http(s) URL of up "
        f"to {validation.PAGE_URL_MAX:,} characters, otherwise ignored. Defaults to the Referer."
    ),
    traps.HONEYPOT: {
        "description": (
            "A honeypot for sites that render their own form: pass on the value of a field of "
            "this name that people cannot see. Leave it out, empty or null otherwise: any other "
            "value is taken for a robot's, answered 202 like a stored enquiry, and dropped."
        ),
    },
}


def captcha_field() -> tuple[str, Schema]:
    """The configured captcha's field (CAPTCHA_PROVIDER) and its schema."""
    name = captcha.field_name()
    if name == altcha_proof.FIELD:
        description = (
            "The ALTCHA widget's solution (base64) to a challenge from GET /altcha/challenge; "
            "each solution is accepted once."
        )
        return name, _text(description, maxLength=altcha_proof.PAYLOAD_MAX)
    description = (
        "The captcha widget's response token, checked with the provider named by "
        "CAPTCHA_PROVIDER; each token is accepted once."
    )
    return name, _text(description, maxLength=third_party.TOKEN_MAX)


def error_texts() -> dict[str, list[str]]:
    """For each field, the texts a 422 can carry."""
    return {
        "name": [validation.NAME_REQUIRED, validation.NAME_TOO_LONG, validation.NAME_NOT_PLAIN],
        "email": [validation.INVALID_EMAIL],
        "phone": [validation.INVALID_NUMBER],
        "message": [
            validation.MESSAGE_REQUIRED,
            validation.MESSAGE_TOO_LONG,
            validation.MESSAGE_NOT_PLAIN,
        ],
        captcha.field_name(): [validation.CAPTCHA_FAILED],
    }


def enquiry_schema() -> Schema:
    """The request body of POST /api/enquiries."""
    captcha_name, captcha_schema = captcha_field()
    return {
        "type": "object",
        "description": (
            "Fields not listed are ignored: no field can change the recipients, the sender or "
            "the subject of the clinic's email."
        ),
        "required": ["name", "email", "phone", "message", captcha_name],
        "properties": {
            "name": _text(
                f"Up to {validation.NAME_MAX} characters after trimming, on one line: no line "
                "breaks (CR, LF, U+2028, U+2029, NEL), control characters, NUL, lone surrogates, "
                "bidi overrides or MIME encoded words (=?...?=).",
                minLength=1,
                maxLength=validation.NAME_MAX,
            ),
            "email": _text(
                "Checked by syntax only (no DNS). Letters beyond ASCII are accepted in the domain "
                "but not before the @. Stored normalised; used as the email's Reply-To.",
                minLength=3,
                maxLength=EMAIL_MAX,
            ),
            "phone": {
                "type": ["string", "number"],
                "description": (
                    "A valid number for the clinic's region, or in international form (+...); "
                    "a JSON number is read as its digits. Stored as E.164."
                ),
                "maxLength": validation.PHONE_MAX,
            },
            "message": _text(
                f"Up to {validation.MESSAGE_MAX:,} characters after line ends are normalised to "
                "LF. Line breaks and tabs are kept; other control characters are refused.",
                minLength=1,
                maxLength=validation.MESSAGE_MAX,
            ),
            captcha_name: captcha_schema,
            **OPTIONAL_FIELDS,
        },
        "additionalProperties": True,
    }


def _error(description: str, headers: dict[str, Any] | None = None) -> Schema:
    response: Schema = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        response["headers"] = headers
    return response


def _field_errors() -> Schema:
    texts = {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}
    return {
        "type": "object",
        "required": ["errors"],
        "additionalProperties": False,
        "properties": {
            "errors": {
                "type": "object",
                "minProperties": 1,
                "description": "For each field in error, the texts to show next to it.",
                "properties": {
                    field: {**texts, "examples": [[text] for text in known]}
                    for field, known in error_texts().items()
                },
                "additionalProperties": texts,
            }
        },
    }


def _challenge() -> Schema:
    return {
        "type": "object",
        "required": ["parameters", "signature"],
        "properties": {
            "parameters": {
                "type": "object",
                "required": ["algorithm", "cost", "expiresAt", "nonce", "salt"],
                "properties": {
                    "algorithm": {"type": "string"},
                    "cost": {"type": "integer", "minimum": 1},
                    "expiresAt": {"type": "integer", "description": "Unix time."},
                    "keyLength": {"type": "integer"},
                    "keyPrefix": {"type": "string"},
                    "nonce": {"type": "string"},
                    "salt": {"type": "string"},
                },
            },
            "signature": {"type": "string"},
        },
    }


def _create_enquiry(cors: str) -> Schema:
    return {
        "operationId": "createEnquiry",
        "summary": "Store an enquiry and queue it for the clinic's inbox.",
        "description": cors,
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": (
                    "A repeat with the same key and fields answers with the first id and "
                    "stores nothing."
                ),
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": IDEMPOTENCY_KEY_MAX,
                    "pattern": "^[\\x20-\\x7e]+$",
                },
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Enquiry"}}},
        },
        "responses": {
            "202": {
                "description": "Stored durably and queued for delivery.",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Queued"}}
                },
            },
            "400": _error(
                "The body is not a JSON object, is not UTF-8 "
                f"(\u201c{body_checks.JSON_NOT_UTF8}\u201d), is nested too deeply, or the "
                "Idempotency-Key header is malformed."
            ),
            "403": _error("Sent from a site that is not allowed."),
            "413": _error("The body is larger than MAX_CONTENT_LENGTH (64 KiB)."),
            "415": _error("The body was not sent as Content-Type: application/json."),
            "422": {
                "description": (
                    "A field is invalid, with the exact texts the form shows. Also the answer to "
                    "any body without a valid, unused captcha answer."
                ),
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/FieldErrors"}}
                },
            },
            "429": _error(
                "Too many submissions from this client, or from all clients.",
                headers={
                    "Retry-After": {
                        "required": True,
                        "description": "Seconds until a submission is accepted.",
                        "schema": {"type": "integer", "minimum": 1},
                    }
                },
            ),
        },
    }


def _get_challenge(cors: str) -> Schema:
    return {
        "operationId": "getChallenge",
        "summary": "A fresh, signed ALTCHA challenge (never cached).",
        "description": cors,
        "responses": {
            "200": {
                "description": "The challenge, valid for ALTCHA_EXPIRES_SECONDS.",
                "headers": {
                    "Cache-Control": {
                        "required": True,
                        "schema": {"type": "string", "const": "no-store"},
                    }
                },
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Challenge"}}
                },
            },
            "429": _error(
                "More challenges than RATELIMIT_CHALLENGE allows from one client; Retry-After "
                "says when to ask again."
            ),
        },
    }


def build() -> Schema:
    """The whole OpenAPI document, for the captcha that CAPTCHA_PROVIDER configures."""
    cors = (
        "CORS: answered for the sites in ALLOWED_ORIGINS. A POST whose Origin header names "
        f"another site is refused with 403: \u201c{origins.FOREIGN_ORIGIN}\u201d"
    )
    name, _ = captcha_field()
    paths: Schema = {"/api/enquiries": {"post": _create_enquiry(cors)}}
    schemas: Schema = {
        "Enquiry": enquiry_schema(),
        "Queued": {
            "type": "object",
            "required": ["id", "status"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                "status": {"const": "queued"},
            },
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {"error": {"type": "string", "minLength": 1}},
        },
        "FieldErrors": _field_errors(),
    }
    how = "the widget's response token"
    if name == altcha_proof.FIELD:
        paths["/altcha/challenge"] = {"get": _get_challenge(cors)}
        schemas["Challenge"] = _challenge()
        how = (
            "a solution to a challenge from GET /altcha/challenge (the ALTCHA widget or "
            "library solves its proof of work)"
        )
    description = (
        f"Send an enquiry from a site with its own form. Each enquiry needs a fresh captcha "
        f"answer in `{name}`: {how}. Without a valid one the answer is 422 with the "
        "captcha's text, so generated test data (which cannot solve a captcha) gets 422 "
        "however good its other fields."
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": "Clinic contact form API", "version": "1", "description": description},
        "paths": paths,
        "components": {"schemas": schemas},
    }
