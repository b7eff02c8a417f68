"""The one error a CRM delivery or HTTP request raises when the CRM did not take it."""

from __future__ import annotations


class DeliveryError(Exception):
    """A delivery the CRM did not accept.

    retryable: timeouts, connection errors, 5xx, 429, HTML or garbage where JSON was due.
    Not retryable (dead letter): 4xx other than 408/429, an explicit error in the body.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        response: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.response = response
        self.retry_after = retry_after
