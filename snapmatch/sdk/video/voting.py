"""Temporal voting: turn per-frame lookups into steady `appeared` / `gone` events.

A single frame's answer flickers (motion blur, a hand over the label, a
product half in view). A product is reported when it wins at least
`min_votes` of the last `window` votes; it is reported gone when it wins
fewer than `keep_votes` of them, or when another product takes over. A vote
is the best product of one lookup when its score clears the threshold, else
None: an empty counter or an unknown product never wins anything.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass

from snapmatch.sdk.errors import InvalidArgumentError
from snapmatch.sdk.types import Match


@dataclass(frozen=True)
class WatchEvent:
    """A product came into view (`appeared`) or left it (`gone`)."""

    kind: str  # "appeared" | "gone"
    product_id: str
    name: str
    score: float  # mean cosine score of the product's winning votes in the window
    frame_index: int  # the frame whose lookup decided it
    timestamp: float  # that frame's time in the stream, seconds

    def to_dict(self) -> dict:
        return {"event": self.kind, "product_id": self.product_id, "name": self.name, "score": round(self.score, 4),
                "frame_index": self.frame_index, "timestamp": round(self.timestamp, 3)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


@dataclass(frozen=True)
class VotingConfig:
    """How many looked-up frames a product must win to be reported, and to stay reported."""

    window: int = 5  # votes remembered
    min_votes: int = 3  # wins in the window to be reported (appeared)
    keep_votes: int = 2  # fewer wins than this in the window: reported gone

    def __post_init__(self) -> None:
        if self.window < 1:
            raise InvalidArgumentError(f"voting window must be at least 1, not {self.window}")
        if not 1 <= self.min_votes <= self.window:
            raise InvalidArgumentError(f"min_votes must be between 1 and the window ({self.window}), not {self.min_votes}")
        if not 1 <= self.keep_votes <= self.min_votes:
            raise InvalidArgumentError(f"keep_votes must be between 1 and min_votes ({self.min_votes}), not {self.keep_votes}")


class Voter:
    """The voting state machine; feed it one vote per looked-up frame."""

    def __init__(self, config: VotingConfig | None = None) -> None:
        self.config = config or VotingConfig()
        self.current: Match | None = None  # the product reported as in view
        self._votes: deque[Match | None] = deque(maxlen=self.config.window)
        self._last_score: dict[str, float] = {}

    def vote(self, match: Match | None, frame_index: int, timestamp: float) -> list[WatchEvent]:
        """Add one vote (the accepted best match of a frame, or None); returns the events it causes."""
        self._votes.append(match)
        if match is not None:
            self._last_score[match.product_id] = match.score
        wins = self._wins()
        events: list[WatchEvent] = []
        leader = self._leader(wins)
        current = self.current.product_id if self.current else None
        if leader is not None and leader != current and wins[leader][0] >= self.config.min_votes:
            if self.current is not None:
                events.append(self._event("gone", self.current, wins, frame_index, timestamp))
            self.current = self._latest(leader)
            events.append(self._event("appeared", self.current, wins, frame_index, timestamp))
        elif self.current is not None and wins.get(self.current.product_id, (0, 0.0))[0] < self.config.keep_votes:
            events.append(self._event("gone", self.current, wins, frame_index, timestamp))
            self.current = None
        return events

    def finish(self, frame_index: int, timestamp: float) -> list[WatchEvent]:
        """The stream ended: the product in view (if any) is reported gone."""
        if self.current is None:
            return []
        event = self._event("gone", self.current, self._wins(), frame_index, timestamp)
        self.current = None
        self._votes.clear()
        return [event]

    def _wins(self) -> dict[str, tuple[int, float]]:
        """product id -> (wins in the window, sum of their scores)."""
        wins: dict[str, tuple[int, float]] = {}
        for match in self._votes:
            if match is not None:
                count, total = wins.get(match.product_id, (0, 0.0))
                wins[match.product_id] = (count + 1, total + match.score)
        return wins

    def _leader(self, wins: dict[str, tuple[int, float]]) -> str | None:
        # Most wins; a tie goes to the product that won most recently.
        recency = {m.product_id: i for i, m in enumerate(self._votes) if m is not None}
        return max(wins, key=lambda pid: (wins[pid][0], recency[pid]), default=None)

    def _latest(self, product_id: str) -> Match:
        return next(m for m in reversed(self._votes) if m is not None and m.product_id == product_id)

    def _event(self, kind: str, match: Match, wins, frame_index: int, timestamp: float) -> WatchEvent:
        count, total = wins.get(match.product_id, (0, 0.0))
        score = total / count if count else self._last_score.get(match.product_id, match.score)
        return WatchEvent(kind, match.product_id, match.name, float(score), frame_index, timestamp)
