"""Containers: what wraps a disk (split segments; later cue sheets, NRG, MDS, DMG)."""
