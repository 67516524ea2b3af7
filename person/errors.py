"""The project's own error type: bad input that a command ends with its message instead of a traceback.

Every error that means "this input cannot be used" (a malformed record, an unreadable image in strict
mode, a store of another teacher, a checkpoint that is not one) derives from `PersonError` and carries a
message that names the thing and the fix. A traceback is left for bugs.
"""
from __future__ import annotations


class PersonError(Exception):
    """Bad input, said in one message that names what and how to fix it."""
