"""Errors for bad input. The CLI turns :class:`InputError` into exit code 2, the server into HTTP 4xx."""


class InputError(ValueError):
    """Input that cannot be used (file, volume, label map, configuration); the message names why."""
