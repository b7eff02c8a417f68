"""Why a recording cannot be had (kept apart so callers need not load the encoder)."""


class RecordingError(Exception):
    """A recording that is missing, empty, broken or in a format pbxcrm cannot convert."""


class RecordingNotReady(Exception):
    """The file is still being converted after `ready_wait_seconds`."""
