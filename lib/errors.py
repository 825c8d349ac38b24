"""Map the core's errors to HTTP answers with a message (MONAI Label answers a bare 500 by default)."""

from __future__ import annotations

from contextlib import contextmanager

from fastapi import HTTPException

from mudo_app.errors import InputError


def not_found(message: str) -> HTTPException:
    return HTTPException(status_code=404, detail=message)


def unprocessable(message: str) -> HTTPException:
    return HTTPException(status_code=422, detail=message)


@contextmanager
def http_errors():
    """InputError -> 422 naming the problem; a missing model file -> 503 (the server has no model yet)."""
    try:
        yield
    except InputError as exc:
        raise unprocessable(str(exc)) from exc
    except FileNotFoundError as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from exc
