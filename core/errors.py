"""Errors that reach the user as one clear line (the CLI exits 2 on them)."""


class CsbotError(Exception):
    """Base of every error csbot reports to the user instead of a traceback."""


class UserError(CsbotError):
    """Bad input: a malformed file, an unknown id, a missing model."""


class ConfigError(CsbotError, ValueError):
    """A setting could not be read or has an invalid value."""
