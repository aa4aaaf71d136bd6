"""Errors that reach users: each names the input and the problem."""

from __future__ import annotations


class UnimusicError(Exception):
    """Base class of every error unimusic raises on purpose."""


class InputError(UnimusicError):
    """An input (file, token stream, parameter) that cannot be used.

    ``source`` names the input (a path, ``"<stdin>"``, ``"LMX token 17"``...),
    ``problem`` says what is wrong with it in one line.
    """

    def __init__(self, source: str, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


class VocabularyMismatchError(UnimusicError):
    """A shard or checkpoint was written with a different vocabulary or codec."""

    def __init__(self, what: str, expected: str, found: str):
        self.expected = expected
        self.found = found
        super().__init__(f"{what}: vocabulary hash mismatch (expected {expected}, found {found})")
