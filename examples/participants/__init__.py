"""Participants that serve the example processes (``examples/processes``)."""
