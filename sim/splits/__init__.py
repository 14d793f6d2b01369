"""Splits of a dataset: the two domains of a cross-domain scenario with leave-one-out ranking
data (`domains`), the attacker's public users, and (one module per need) the splits other
scenarios use."""

from .domains import (
    DEFAULT_SOURCE_GENRES,
    DEFAULT_TARGET_GENRES,
    POPULATIONS,
    DomainSplit,
    SplitError,
    leave_one_out,
    public_users,
    split_domains,
    split_table,
)

__all__ = [
    "DEFAULT_SOURCE_GENRES",
    "DEFAULT_TARGET_GENRES",
    "POPULATIONS",
    "DomainSplit",
    "SplitError",
    "leave_one_out",
    "public_users",
    "split_domains",
    "split_table",
]
