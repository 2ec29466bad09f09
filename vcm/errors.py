"""Exceptions raised by vcm. Each names the offending file or value and what was expected."""


class VcmError(Exception):
    """Base class of every error vcm raises on purpose."""


class DataError(VcmError, ValueError):
    """A data file (image, label, calib, annotation) is missing, corrupt or malformed."""


class BitstreamError(VcmError, ValueError):
    """A bitstream is truncated, corrupt, or was made by another codec or other weights."""


class ConfigError(VcmError, ValueError):
    """A configuration value is out of range or names something that does not exist."""


class CodecUnavailableError(VcmError, RuntimeError):
    """An external codec (e.g. a VTM binary) is not available on this machine."""
