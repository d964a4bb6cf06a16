"""The errors a user can cause (bad config, data, prefix or model); the CLI prints them as one line."""


class MoslimError(ValueError):
    """Base of every user-facing error: its message alone says what is wrong and where."""
