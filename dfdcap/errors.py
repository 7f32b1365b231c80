"""One error hierarchy: the CLI turns any DfdcapError into a one-line message and exit 1."""


class DfdcapError(Exception):
    """Base of every error dfdcap raises on purpose; the message names the thing and the problem."""

    exit_code = 1  # the CLI's exit status; 130 for work stopped by Ctrl-C (what was complete is kept)


class DeviceError(DfdcapError):
    """A sensor or phone could not be opened, or stopped delivering."""


class SessionError(DfdcapError):
    """A session folder is missing, malformed, or cannot be written."""


class CalibrationError(DfdcapError):
    """Calibration input is unusable or the fit failed."""


class SyncError(DfdcapError):
    """Timestamps are missing, malformed or inconsistent."""


class DatasetError(DfdcapError):
    """A dataset cannot be built or read."""


class ModelError(DfdcapError):
    """A model, checkpoint or training configuration is unusable."""
