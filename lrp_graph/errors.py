"""Errors that users can cause and that the CLI reports as one line (exit code 2)."""
from __future__ import annotations


class LRPError(Exception):
    """Base of every expected error: bad models, bad inputs, bad configuration."""


class ModelError(LRPError):
    """The model file is missing, unreadable, malformed or unsafe."""


class UnsupportedOperatorError(LRPError):
    """The model holds nodes for which no LRP rule is registered."""


class InputError(LRPError):
    """An input array, target or option does not fit the model."""


class ConfigError(LRPError):
    """A composite, rule or option is invalid."""
