"""The AMI client's errors. Each says whether the action reached Asterisk: callers decide
from the class alone whether a retry could run an action twice (it could after a timeout or
a lost connection, it cannot after AmiNotConnected)."""

from __future__ import annotations


class AmiError(Exception):
    """Base of the AMI client's errors."""


class AmiLoginError(AmiError):
    """Asterisk refused the username/secret (the message names the user, never the secret)."""


class AmiNotConnected(AmiError):
    """Not logged in right now: the action was NOT sent and never will be."""


class AmiActionTimeout(AmiError):
    """Sent, but no complete answer in time. It may have run; it is never re-sent."""


class AmiConnectionLost(AmiError):
    """Sent, but the connection dropped before the answer. It may have run; never re-sent."""
