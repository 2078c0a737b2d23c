"""Errors in Databricks' wire shape: ``{"error_code": ..., "message": ...}`` with the matching status.

Every error the server answers is built here; ``databricks-sdk`` maps status and code to its exceptions
(400 ``BadRequest``, 404 ``NotFound``/``ResourceDoesNotExist``, 503 ``TemporarilyUnavailable``, 504
``DeadlineExceeded``, ...).
"""

from __future__ import annotations


class ApiError(Exception):
    """An error the server answers as Databricks does; ``databricks-sdk`` maps it to its own exceptions."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message

    def body(self) -> dict[str, str]:
        return {"error_code": self.error_code, "message": self.message}


class ModelLoadError(Exception):
    """A served model that could not be loaded; the message says why (MLflow's error)."""


def bad_request(message: str) -> ApiError:
    return ApiError(400, "INVALID_PARAMETER_VALUE", message)


def model_error(message: str) -> ApiError:
    """What Databricks answers when the served model raises: 400 ``BAD_REQUEST``."""
    return ApiError(400, "BAD_REQUEST", message)


def invalid_state(message: str) -> ApiError:
    return ApiError(400, "INVALID_STATE", message)


def unauthenticated(message: str) -> ApiError:
    return ApiError(401, "UNAUTHENTICATED", message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "RESOURCE_DOES_NOT_EXIST", message)


def no_such_route(method: str, path: str) -> ApiError:
    """A path or method the workspace does not have (what Databricks answers for an unknown API)."""
    return ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} {path}'")


def already_exists(message: str) -> ApiError:
    return ApiError(409, "RESOURCE_ALREADY_EXISTS", message)


def conflict(message: str) -> ApiError:
    return ApiError(409, "RESOURCE_CONFLICT", message)


def too_large(message: str) -> ApiError:
    return ApiError(413, "INVALID_PARAMETER_VALUE", message)


def internal_error(message: str) -> ApiError:
    return ApiError(500, "INTERNAL_ERROR", message)


def unavailable(message: str) -> ApiError:
    """503: try again later (an endpoint starting or a replica recovering)."""
    return ApiError(503, "TEMPORARILY_UNAVAILABLE", message)


def timed_out(message: str) -> ApiError:
    """504: the request ran past the execution limit (Databricks: 297 s for CPU and GPU endpoints)."""
    return ApiError(504, "DEADLINE_EXCEEDED", message)


def http_error(status: int, message: str) -> ApiError:
    """Any other client error the HTTP layer raises (a malformed request line, ...)."""
    return ApiError(status, "BAD_REQUEST", message)
