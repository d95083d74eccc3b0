"""Find the similar tickets in a queue: candidate pairs by embedding, decided by the cascade,
grouped into cohesive groups or by union-find (``speculabel match``; ``speculabel.match(...)``
from Python)."""

from speculabel.match.api import match
from speculabel.match.certify import MatchCertificate, certify_matches
from speculabel.match.run import MatchResult, MatchSettings, MatchStats

__all__ = ["MatchCertificate", "MatchResult", "MatchSettings", "MatchStats", "certify_matches",
           "match"]
