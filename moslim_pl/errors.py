"""The errors a user can cause (bad config, data, prefix or model); the CLI prints them as one line."""


class MoslimError(ValueError):
    """Base of every user-facing error: its message alone says what is wrong and where."""


def require(ok: bool, name: str, need: str, value: object) -> None:
    """The one-line check of an argument: unless ``ok``, raise ``MoslimError`` saying
    ``<name> must be <need>, got <value>``."""
    if not ok:
        raise MoslimError(f"{name} must be {need}, got {value!r}")
