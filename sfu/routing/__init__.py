"""Routing: Room -> PublishedTrack (its RecvStream) -> one DownTrack per subscriber.

The path of one packet, in file order: participant.py (publish transport handler, SSRC
lookup) -> stream.py (RecvStream: stats, NACK generator, retransmission buffer, keyframe
detection) -> track.py (PublishedTrack: the subscriber list, copy-on-write) -> downtrack.py
(DownTrack: seq/ts/SSRC/PT rewrite, send). Feedback flows back the same way.
"""
