"""Optical disc images: cue sheets, NRG, MDS/MDF, CCD; sessions, tracks and sector views."""
