"""Errors a run reports to its user (each message names what failed and how to fix it)."""


class RunError(Exception):
    """A run could not finish; the message names the party and the step."""


class ConfigError(ValueError):
    """A bad option; the message lists the valid choices."""
