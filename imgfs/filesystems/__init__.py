"""Filesystem readers: each turns a volume stream into a tree of ``Node``s and streams of file bytes."""
