"""rrseg.tools.experiment: reading a run's log."""

from __future__ import annotations

from rrseg.tools.experiment import last_run


def test_last_run_starts_at_the_last_fresh_start():
    log = [{"event": "start", "resume": False}, {"event": "train", "iteration": 1},
           {"event": "start", "resume": False}, {"event": "train", "iteration": 1},
           {"event": "start", "resume": True}, {"event": "train", "iteration": 2}]
    assert last_run(log) == log[2:]
    assert last_run(log[1:2]) == log[1:2]
