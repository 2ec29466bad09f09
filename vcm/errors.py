"""Exceptions raised by vcm. Each names the offending file or value and what was expected."""


class VcmError(Exception):
    """Base class of every error vcm raises on purpose."""


class DataError(VcmError, ValueError):
    """A data file (image, label, calib, annotation) is missing, corrupt or malformed."""


class BitstreamError(VcmError, ValueError):
    """A bitstream is truncated, corrupt, or was made by another codec or other weights.

    The message is always one short line, whatever a crafted file puts into it (a name, a shape).
    """

    MAX_MESSAGE = 400

    def __init__(self, message: object = ""):
        text = " ".join(str(message).split())
        if len(text) > self.MAX_MESSAGE:
            text = text[: self.MAX_MESSAGE - 15] + " ... (shortened)"
        super().__init__(text)


class ConfigError(VcmError, ValueError):
    """A configuration value is out of range or names something that does not exist."""


class CodecUnavailableError(VcmError, RuntimeError):
    """An external codec (e.g. a VTM binary) is not available on this machine."""
