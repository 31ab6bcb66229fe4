"""Adapters that put fedpoison's defenses, auditors and attacks inside other FL frameworks.

Each integration lives in its own subpackage and imports its framework only
when used, so ``import fedpoison`` never needs an optional dependency.
"""
