"""Containers: what wraps a disk or a disc (split segments, cue sheets, NRG, MDS, CCD, DMG, sparse images).

Each opener is named by its registry entry and called as ``opener(stream, ctx)`` (``imgfs.layer``). A
container that wraps one disk (a decoded DMG, a sparse image, a decrypted image) returns it as a stream;
an optical disc returns its sessions and tracks as a volume set (``imgfs.containers.optical.disc``).
"""
