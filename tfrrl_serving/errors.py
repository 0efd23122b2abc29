"""What a user gets wrong when starting a server or a client of the serving app, as
:class:`tfrrl.errors.UserError` subclasses: the command line prints the message as one line (exit
code 2) instead of a traceback. Each is also the built-in type a caller may already catch, and
each message says what is wrong and what to do."""

from __future__ import annotations

from tfrrl.errors import UserError


class ExportNotFoundError(UserError, FileNotFoundError):
    """``--export`` does not exist or holds no servable (exported and indexed) version."""


class DataNotFoundError(UserError, FileNotFoundError):
    """``--data`` does not exist or has no user snapshot."""


class PortError(UserError, ValueError):
    """A port outside 0-65535."""


class PortInUseError(UserError, OSError):
    """The port is taken by another process."""


class ModelConfigError(UserError, ValueError):
    """A model config (``--model_config_file``, ``--name``) that names nothing servable."""


class TFServingUnreachableError(UserError, ConnectionError):
    """``--tf-serving`` does not answer (or does not serve the model)."""


class TLSConfigError(UserError, ValueError):
    """TLS flags that are incomplete or name unreadable files."""


class NoValidVersionError(UserError, ValueError):
    """Every version on disk failed validation (checksums, finite values, warm-up)."""
