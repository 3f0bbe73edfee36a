"""The one error type of the persistence package."""


class CheckpointError(Exception):
    """A checkpoint could not be saved or loaded; the message is one sentence saying why and what to do."""
