"""chatrelay: streams chat completions over SSE and never loses a message."""

__version__ = "0.1.0"
