"""The monitoring summary and the chart (a valid PNG that shows the data: its pixels
are checked), and the offline `csbot report` command on a replayed real stream."""

from __future__ import annotations

import datetime as dt
import io
import json

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

from bot.monitoring.report import (
    DPI,
    FIGSIZE,
    NEGATIVE_COLOR,
    NEUTRAL_COLOR,
    POSITIVE_COLOR,
    TOPIC_COLOR,
    render_chart,
    summarize,
)
from tests.conftest import shared_data
from tests.monitoring.conftest import AIRLINE_CSV, utc

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
START = utc(2025, 3, 3)


def rows_for(daily: list[tuple[int, int, int]], topics=("late_delivery", "refund")) -> list[dict]:
    """Monitored-message rows: per day (negative, neutral, positive) counts, spread over the day."""
    rows = []
    for day, counts in enumerate(daily):
        for label, n in zip(("negative", "neutral", "positive"), counts):
            for i in range(n):
                when = START + dt.timedelta(days=day, minutes=10 + i * 7)
                intent = topics[i % len(topics)] if label == "negative" else "out_of_scope"
                rows.append({"time": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "sentiment": label, "intent": intent})
    return rows


def summary_for(daily, **kwargs):
    return summarize(rows_for(daily, **kwargs), channel="CW", since=START,
                     until=START + dt.timedelta(days=len(daily)), label="#support")


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def count_colour(image: np.ndarray, colour: str, tolerance: int = 6) -> int:
    rgb = np.array([round(c * 255) for c in to_rgb(colour)])
    return int((np.abs(image - rgb).max(axis=2) <= tolerance).sum())


def test_summary_counts_days_shares_and_topics():
    summary = summary_for([(2, 5, 3), (0, 0, 0), (6, 2, 2)])
    assert summary["total"] == 20 and summary["counts"] == {"negative": 8, "neutral": 7, "positive": 5}
    assert summary["negative_share"] == 0.4
    assert [d["date"] for d in summary["daily"]] == ["2025-03-03", "2025-03-04", "2025-03-05"]
    assert summary["daily"][0]["negative_share"] == 0.2 and summary["daily"][1]["negative_share"] is None
    assert summary["top_negative_topics"] == [{"topic": "late_delivery", "count": 4}, {"topic": "refund", "count": 4}]
    json.dumps(summary)  # JSON-able, for --json


def test_chart_is_a_png_of_the_expected_size():
    png = render_chart(summary_for([(10, 50, 20)] * 7))
    assert png.startswith(PNG_SIGNATURE)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))


def test_chart_pixels_follow_the_negative_counts():
    """Same daily totals (so the same y scale); the second has 3x the negatives on one day, taken from
    the neutral messages: the negative colour's area grows by the same amount the neutral one shrinks."""
    calm = [(10, 50, 20)] * 7
    surge = list(calm)
    surge[3] = (40, 20, 20)
    a, b = pixels(render_chart(summary_for(calm))), pixels(render_chart(summary_for(surge)))
    red_a, red_b = count_colour(a, NEGATIVE_COLOR), count_colour(b, NEGATIVE_COLOR)
    grey_a, grey_b = count_colour(a, NEUTRAL_COLOR), count_colour(b, NEUTRAL_COLOR)
    green_a, green_b = count_colour(a, POSITIVE_COLOR), count_colour(b, POSITIVE_COLOR)
    assert red_a > 1000 and grey_a > 1000 and green_a > 1000
    # 70 -> 100 negative messages in all: the red area grows by ~3/7.
    assert red_b / red_a == pytest.approx(100 / 70, rel=0.08)
    assert grey_b / grey_a == pytest.approx(320 / 350, rel=0.08)
    assert green_b == pytest.approx(green_a, rel=0.05)
    # The extra red is in one day's bar: in the surge chart one column band holds more red.
    red_cols_a = (np.abs(a - np.array([214, 39, 40])).max(axis=2) <= 6).sum(axis=0)
    red_cols_b = (np.abs(b - np.array([214, 39, 40])).max(axis=2) <= 6).sum(axis=0)
    assert red_cols_b.max() >= 3 * red_cols_a.max() * 0.9


def test_chart_without_negatives_has_no_negative_or_topic_bars():
    image = pixels(render_chart(summary_for([(0, 30, 10)] * 3)))
    assert count_colour(image, NEGATIVE_COLOR) < 250  # the legend's swatch only
    assert count_colour(image, TOPIC_COLOR) == 0
    assert count_colour(image, NEUTRAL_COLOR) > 1000
    with_topics = pixels(render_chart(summary_for([(5, 30, 10)] * 3)))
    assert count_colour(with_topics, TOPIC_COLOR) > 500


def test_report_command_replays_a_real_stream_offline(tmp_path, monkeypatch, capsys):
    """`csbot report --replay ...` on Virgin America's tweets (504, human labels, reasons as topics)."""
    from bot.commands.report import main

    csv_path = shared_data(*AIRLINE_CSV)
    monkeypatch.setenv("CSBOT_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "chart.png"
    code = main(["--channel", "CVA", "--replay", str(csv_path), "--time-column", "tweet_created",
                 "--label-column", "airline_sentiment", "--topic-column", "negativereason",
                 "--where", "airline=Virgin America", "--since", "7d", "--out", str(out), "--json",
                 "--label", "#virgin-america"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["until"] == "2015-02-24T11:35:00Z"  # the newest replayed tweet
    assert summary["total"] == sum(summary["counts"].values()) and 450 < summary["total"] <= 504
    assert summary["top_negative_topics"][0]["topic"] == "Customer Service Issue"
    assert summary["alerts"] == []  # a quiet channel
    assert out.read_bytes().startswith(PNG_SIGNATURE) and summary["chart"] == str(out)
    assert count_colour(pixels(out.read_bytes()), NEGATIVE_COLOR) > 1000
    # The store now holds the stream: a second report needs no replay, and the text form reads well.
    assert main(["--channel", "CVA", "--since", "2015-02-17", "--until", "2015-02-25"]) == 0
    text = capsys.readouterr().out
    assert "#" not in text.splitlines()[0] and "negative" in text and "spike alerts: none" in text
    assert main(["--channel", "CVA", "--since", "2015-02-25", "--until", "2015-02-17"]) == 2
