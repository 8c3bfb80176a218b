"""Thin Qt docks on top of the session and the workers."""
