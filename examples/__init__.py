"""Example processes, participants and the demo."""
