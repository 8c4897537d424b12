"""The SDK's own error types and per-item error codes; tritonclient's exceptions are wrapped."""
from __future__ import annotations

from qfm_core.image_guard import CODES


class QFMError(Exception):
    """Base class of every error the SDK raises."""


class ServerUnavailable(QFMError):
    """No endpoint answered (after retries): the server is down, overloaded or unreachable."""


class StorageUnavailable(QFMError):
    """The object store (S3, GCS, HTTP) did not answer for the retry period."""


class ModelNotReady(QFMError):
    """The server is up but the qfm_iqm model is not loaded or does not look as expected."""


# Per-item error codes carried by ScoreResult.error_code (one bad image never fails its batch).
INVALID_IMAGE = "INVALID_IMAGE"  # the server could not decode it
TOO_LARGE = "TOO_LARGE"  # over the client's byte cap, never sent
UNREADABLE = "UNREADABLE"  # the file or object could not be read (missing, forbidden)
SERVER_ERROR = "SERVER_ERROR"  # the server failed for another reason (after retries)
UNAVAILABLE = "UNAVAILABLE"  # no endpoint could take the request (after retries)
UNSUPPORTED_FORMAT = "UNSUPPORTED_FORMAT"  # not an allowed format (checked locally, and by the server)
# The server's per-image codes (qfm_score, core/qfm_core/image_guard.py) arrive as they are:
# EMPTY, TOO_MANY_BYTES, UNSUPPORTED_FORMAT, TOO_MANY_PIXELS, TOO_SMALL, BAD_ASPECT, CORRUPT.
SERVER_ITEM_CODES = CODES
