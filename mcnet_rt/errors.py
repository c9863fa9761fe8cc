"""User-facing errors: the CLI prints them as one line and exits non-zero, without a traceback."""


class InputError(Exception):
    """A file or value the user gave cannot be used; the message names it and the problem."""


class CheckpointError(InputError):
    """A checkpoint is missing, corrupt, of another model, or does not match the configuration."""
