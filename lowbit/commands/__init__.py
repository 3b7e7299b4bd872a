"""Subcommands of the ``lowbit`` CLI that belong to no single part of the compiler."""
