"""Errors a user can fix. The CLI prints them as one line and exits 2, never with a traceback."""


class UserError(Exception):
    """Bad input or environment: the message names the file or setting and the fix."""
