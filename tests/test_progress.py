"""Long work shows progress: a bar on a terminal, a periodic log line (step, rate, ETA) elsewhere."""

from __future__ import annotations

import logging

from mmgen.progress import LogProgress, duration, progress


def test_not_a_terminal_gives_log_lines_with_count_rate_and_eta(caplog, monkeypatch):
    monkeypatch.delenv("MMGEN_NO_PROGRESS", raising=False)
    clock = iter([0.0, 10.0, 20.0, 40.0, 41.0, 60.0])
    monkeypatch.setattr("mmgen.progress.time.monotonic", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="mmgen.progress"):
        bar = progress(total=100, desc="train", unit="step", every_s=30.0)  # pytest's stderr is no terminal
        assert isinstance(bar, LogProgress)
        bar.set_postfix(loss="2.31")
        bar.update(20)  # t = 10: too soon for a line
        bar.update(20)  # t = 20
        bar.update(40)  # t = 40: 80 steps in 40 s
        bar.close()  # t = 41 -> the last line, whatever the time
        bar.close()  # once only
    assert [r.getMessage() for r in caplog.records] == [
        "train 80/100 step (80%), 2.00 step/s, ETA 10s, loss=2.31",
        "train 80/100 step (80%), 1.95 step/s, ETA 10s, loss=2.31",
    ]


def test_quiet_runs_and_the_test_suite_get_no_lines(caplog, monkeypatch):
    monkeypatch.setenv("MMGEN_NO_PROGRESS", "1")
    with caplog.at_level(logging.INFO, logger="mmgen.progress"), progress(total=3, desc="x", every_s=0.0) as bar:
        bar.update(3)
    monkeypatch.delenv("MMGEN_NO_PROGRESS")
    with caplog.at_level(logging.INFO, logger="mmgen.progress"), progress(total=3, desc="x", enabled=False) as bar:
        bar.update(3)
    assert caplog.records == []


def test_durations_read_like_a_person_writes_them():
    assert [duration(s) for s in (7.2, 125, 3725)] == ["7s", "2m 5s", "1h 2m"]
