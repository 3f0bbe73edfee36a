"""The error every venue parser raises for a frame it cannot interpret."""


class ParseError(ValueError):
    """A frame that no parser can interpret (shared by every venue parser); `MarketData` counts and skips it."""
