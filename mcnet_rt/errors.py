"""User-facing errors: the CLI prints them as one line and exits non-zero, without a traceback.

Library code speaks its own API: a message names the problem and, where a setting would fix it, the setting by its
Python name (`crop="centre"`); `options` lists those settings so that a front end can add its own spelling of them
(the CLI adds the flags: `--crop`)."""


class InputError(Exception):
    """A file or value the user gave cannot be used; the message names it and the problem."""

    def __init__(self, message: str, *, options: tuple[str, ...] = ()):
        super().__init__(message)
        self.options = tuple(options)


class CheckpointError(InputError):
    """A checkpoint is missing, corrupt, of another model, or does not match the configuration."""
