"""Request guards: one JSON error format, body-size/UTF-8 checks, and the API key.

* :class:`ApiError` → ``{"error": "<message>", "code": "...", "field": "..."}`` with a 4xx/5xx
  status; the ``error`` string is what LibreTranslate clients read.
* :class:`BodyGuard` (ASGI middleware) bounds the request body *before* anything parses it:
  a declared ``Content-Length`` over the limit is refused without reading, and a body sent
  without one (chunked) is counted while it streams. Bodies must be UTF-8.
* :func:`check_api_key` compares in constant time.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Optional

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ApiError(Exception):
    """An error answered as :class:`serve.schemas.ErrorResponse`."""

    def __init__(self, status: int, code: str, message: str, field: Optional[str] = None,
                 headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.message, self.field, self.headers)


def error_response(status: int, code: str, message: str, field: Optional[str] = None,
                   headers: Optional[dict[str, str]] = None) -> JSONResponse:
    return JSONResponse({"error": message, "code": code, "field": field}, status_code=status, headers=headers)


# ---------------------------------------------------------------------------- validation errors


def field_path(loc: tuple[Any, ...] | list[Any]) -> Optional[str]:
    """pydantic ``loc`` → ``texts[3]`` / ``q`` (the leading ``body`` dropped; union branch names
    such as ``list[...]`` skipped)."""
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and ("[" in part or part in ("str", "function-after[check_text(), str]")):
            continue  # a union/validator branch label, not a field
        else:
            out += f".{part}" if out else str(part)
    return out or None


_CODES = {
    "missing": "missing_field",
    "extra_forbidden": "unknown_field",
    "string_too_long": "text_too_long",
    "too_long": "too_many_items",
    "too_short": "empty_list",
    "json_invalid": "invalid_json",
    "string_unicode": "invalid_unicode",  # e.g. a lone surrogate from a JSON \ud800 escape
}


def _specificity(error: dict[str, Any]) -> tuple[int, bool]:
    """A union (str | list) reports one error per branch; the most specific one is deepest,
    and at equal depth a broken constraint beats a wrong type (LibreTranslate's ``q: []`` is a
    list that is too short, not "Input should be a valid string")."""
    return len(error.get("loc", ())), not str(error.get("type", "")).endswith("_type")


def validation_error(errors: list[dict[str, Any]], status: int = 422) -> ApiError:
    """The first pydantic/FastAPI validation error as an :class:`ApiError` naming its field."""
    err = max(errors, key=_specificity) if errors else {"msg": "invalid request"}
    etype = err.get("type", "")
    if etype == "json_invalid":
        ctx = err.get("ctx") or {}
        pos = err.get("loc", ("body", 0))[-1]
        return ApiError(400, "invalid_json", f"request body is not valid JSON: {ctx.get('error', '')} at offset {pos}")
    field = field_path(err.get("loc", ()))
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if etype == "string_too_long":
        msg = f"{msg} (got {len(err['input'])})" if isinstance(err.get("input"), str) else msg
    elif etype in ("too_long", "too_short") and isinstance(err.get("input"), list):
        msg = f"{msg.split(',')[0]} (got {len(err['input'])})"
    elif etype.endswith("_type") or etype in ("model_attributes_type", "dict_type"):
        msg = f"{msg} (got {type(err.get('input')).__name__})"
    code = _CODES.get(etype, "invalid_control_character" if "control character" in msg else "invalid_value")
    if etype.endswith("_type"):
        code = "wrong_type"
    # other fields with problems (the branches of one union field count once)
    others = {field_path(e.get("loc", ())) for e in errors} - {field}
    more = f" (and problems in {len(others)} more field(s))" if others else ""
    return ApiError(status, code, (f"{field}: {msg}" if field else msg) + more, field)


# ---------------------------------------------------------------------------- body guard


class BodyGuard:
    """ASGI middleware: refuse bodies over ``max_body_bytes`` (413) or not UTF-8 (400), then
    replay the buffered body to the app. Bodies are small by construction, so buffering is
    bounded by the limit."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
        if declared is not None and declared < 0:
            await error_response(400, "invalid_content_length", "Content-Length is not a non-negative integer")(
                scope, receive, send
            )
            return
        if declared is not None and declared > limit:
            await _too_large(declared, limit)(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:  # chunked bodies, or a Content-Length that lied
                await _too_large(size, limit, at_least=True)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as e:
            await error_response(
                400, "invalid_utf8", f"request body is not valid UTF-8 (byte offset {e.start})"
            )(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as usual

        await self.app(scope, replay, send)


def _too_large(size: int, limit: int, at_least: bool = False) -> JSONResponse:
    got = f"at least {size}" if at_least else str(size)
    # Connection: close, since the unread rest of the body makes the connection unusable
    return error_response(
        413, "body_too_large", f"request body is {got} bytes; the limit is {limit}", headers={"Connection": "close"}
    )


# ---------------------------------------------------------------------------- API key


def provided_key(request: Request) -> Optional[str]:
    """The key from ``Authorization: Bearer``, ``X-API-Key`` or the ``api_key`` query parameter."""
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-api-key") or request.query_params.get("api_key")


def check_api_key(expected: Optional[str], given: Optional[str]) -> None:
    """Raise 401 unless ``given`` equals ``expected`` (no-op when no key is configured)."""
    if expected is None:
        return
    # compare_digest: time does not depend on where the strings differ
    if given is None or not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8")):
        raise ApiError(
            401,
            "unauthorized",
            "missing or wrong API key (send 'Authorization: Bearer KEY', 'X-API-Key: KEY' or api_key)",
            "api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


def json_loads_strict(body: bytes) -> Any:
    """Parse JSON, raising :class:`ApiError` (400) with the position on failure."""
    try:
        return json.loads(body)
    except json.JSONDecodeError as e:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {e.msg} at offset {e.pos}") from None
    except (RecursionError, ValueError) as e:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {e}") from None
