"""Temporal voting as a pure state machine: votes in, appeared/gone events out."""

from __future__ import annotations

import pytest

from snapmatch.sdk.types import Match
from snapmatch.sdk.video.voting import Voter, VotingConfig, WatchEvent


def m(product: str, score: float = 0.9) -> Match:
    return Match(product, product.title(), score, 0)


def feed(voter: Voter, votes) -> list[tuple[str, str, int]]:
    events = []
    for index, vote in enumerate(votes):
        events += [(e.kind, e.product_id, e.frame_index) for e in voter.vote(vote, index, index / 10)]
    return events


def test_appears_on_the_third_win_of_five_and_goes_when_it_stops_winning():
    voter = Voter(VotingConfig(window=5, min_votes=3, keep_votes=2))
    a = m("a")
    events = feed(voter, [None, a, a, a, a, None, None, None, None])
    # Appears at the third win (frame 3); with wins [a, a, a, a, None] -> ... it has 1 win left at frame 8.
    assert events == [("appeared", "a", 3), ("gone", "a", 8)]
    assert voter.current is None


def test_single_misses_do_not_flicker():
    voter = Voter()
    a = m("a")
    events = feed(voter, [a, a, a, None, a, None, a, a, None, a, None, a])
    assert events == [("appeared", "a", 2)]


def test_empty_scene_and_unknown_products_report_nothing():
    voter = Voter()
    assert feed(voter, [None] * 50) == []


def test_a_product_that_never_wins_enough_is_not_reported():
    voter = Voter()
    a, b = m("a"), m("b")
    assert feed(voter, [a, b, None, a, b, None, a, b, None, a, b]) == []


def test_takeover_reports_the_old_product_gone_then_the_new_one():
    voter = Voter()
    a, b = m("a"), m("b")
    events = feed(voter, [a, a, a, b, b, b])
    assert events == [("appeared", "a", 2), ("gone", "a", 5), ("appeared", "b", 5)]


def test_finish_reports_the_product_still_in_view():
    voter = Voter()
    feed(voter, [m("a", 0.8), m("a", 0.9), m("a", 1.0)])
    (event,) = voter.finish(9, 0.9)
    assert (event.kind, event.product_id, event.frame_index, event.timestamp) == ("gone", "a", 9, 0.9)
    assert voter.finish(10, 1.0) == []


def test_event_score_is_the_mean_of_the_winning_votes_and_json_names_the_fields():
    voter = Voter()
    (event,) = [e for i, s in enumerate((0.7, 0.8, 0.9)) for e in voter.vote(m("a", s), i, i * 0.5)]
    assert event.score == pytest.approx(0.8)
    assert event.to_dict() == {"event": "appeared", "product_id": "a", "name": "A", "score": 0.8,
                               "frame_index": 2, "timestamp": 1.0}
    assert isinstance(event, WatchEvent) and '"event": "appeared"' in event.to_json()


@pytest.mark.parametrize("kwargs, message", [
    ({"window": 0}, "window"),
    ({"window": 5, "min_votes": 6}, "min_votes"),
    ({"min_votes": 3, "keep_votes": 4}, "keep_votes"),
])
def test_config_is_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VotingConfig(**kwargs)
