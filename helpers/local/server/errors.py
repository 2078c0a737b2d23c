"""Errors in Databricks' wire shape: ``{"error_code": ..., "message": ...}`` with the matching status."""

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


def invalid_state(message: str) -> ApiError:
    return ApiError(400, "INVALID_STATE", message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "RESOURCE_DOES_NOT_EXIST", message)


def already_exists(message: str) -> ApiError:
    return ApiError(409, "RESOURCE_ALREADY_EXISTS", message)


def unauthenticated(message: str) -> ApiError:
    return ApiError(401, "UNAUTHENTICATED", message)
