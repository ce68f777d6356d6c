"""Decompressors shared by several formats, each a pure function from compressed bytes to at most a stated
size: ADC (DMG and NDIF), LZVN (decmpfs and DMG)."""
