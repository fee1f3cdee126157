"""Golden tests for SRT/WebVTT cues built from word timestamps."""

from __future__ import annotations

import itertools
import string

import pytest

from koel.subtitles import format_timestamp, make_cues, to_srt, to_vtt
from koel.types import WordTimestamp


def _words(*items: tuple[str, float, float]) -> list[WordTimestamp]:
    return [WordTimestamp(text, start, end) for text, start, end in items]


TWO_SENTENCES = _words(
    ("Hello", 0.0, 0.42),
    (",", 0.42, 0.42),
    ("world", 0.5, 0.95),
    (".", 0.95, 0.95),
    ("Mr.", 1.25, 1.6),
    ("Smith", 1.6, 2.0),
    ("said", 2.0, 2.3),
    ("“", 2.3, 2.3),
    ("hi", 2.3, 2.6),
    ("”", 2.6, 2.6),
    ("!", 2.6, 2.61),
)


def test_srt_sentences_golden():
    assert to_srt(TWO_SENTENCES) == (
        "1\n00:00:00,000 --> 00:00:00,950\nHello, world.\n"
        "\n"
        "2\n00:00:01,250 --> 00:00:02,610\nMr. Smith said “hi”!\n"
    )


def test_vtt_sentences_golden():
    assert to_vtt(TWO_SENTENCES) == (
        "WEBVTT\n"
        "\n"
        "00:00:00.000 --> 00:00:00.950\nHello, world.\n"
        "\n"
        "00:00:01.250 --> 00:00:02.610\nMr. Smith said “hi”!\n"
    )


def test_word_level_golden():
    assert to_srt(TWO_SENTENCES[:4], level="word") == (
        "1\n00:00:00,000 --> 00:00:00,420\nHello,\n\n2\n00:00:00,500 --> 00:00:00,950\nworld.\n"
    )
    cues = make_cues(TWO_SENTENCES, level="word")
    assert [c.text for c in cues] == ["Hello,", "world.", "Mr.", "Smith", "said", "“hi”!"]


def _timed(text: str) -> list[WordTimestamp]:
    """Words of ``text`` (tokens split on spaces), 0.3 s each; punctuation takes no time."""
    words, t = [], 0.0
    for token in text.split():
        duration = 0.0 if token in ",." else 0.3
        words.append(WordTimestamp(token, t, t + duration))
        t += duration
    return words


def test_long_sentence_breaks_at_a_central_clause():
    cues = make_cues(
        _timed("After a long and quiet day at sea , the old keeper climbed up the tower to light the lamp ."),
        max_chars=60,
    )
    assert [c.text for c in cues] == [
        "After a long and quiet day at sea,",
        "the old keeper climbed up\nthe tower to light the lamp.",
    ]
    assert (cues[0].start, cues[0].end, cues[1].start) == (0.0, 2.4, 2.4)


def test_long_sentence_without_central_clause_splits_in_balanced_halves():
    cues = make_cues(
        _timed("When the evening came , the old keeper climbed the tower and lit the great lamp once more ."),
        max_chars=60,
    )
    assert [c.text for c in cues] == [
        "When the evening came,\nthe old keeper climbed",
        "the tower and lit the\ngreat lamp once more.",
    ]
    assert all(len(c.text) <= 60 for c in cues)


def test_max_duration_splits_without_punctuation():
    words = [WordTimestamp(f"w{i}", i * 1.0, i * 1.0 + 0.8) for i in range(10)]
    cues = make_cues(words, max_duration=3.0)
    assert [c.text for c in cues] == ["w0 w1 w2", "w3 w4", "w5 w6 w7", "w8 w9"]
    assert all(c.end - c.start <= 3.0 for c in cues)


def test_cues_are_ordered_and_never_overlap():
    words = _words(
        ("One", 0.0, 1.0), (".", 1.0, 1.0), ("Two", 0.8, 1.5), (".", 1.5, 1.5), ("Three", 1.4, 1.4)
    )
    cues = make_cues(words)
    assert [c.text for c in cues] == ["One.", "Two.", "Three"]
    for before, after in itertools.pairwise(cues):
        assert before.start <= before.end <= after.start <= after.end


def test_source_offsets_decide_spacing():
    # "東京へ行きます。" split into words: no spaces in the source, none in the cue.
    text = "東京へ行きます。"
    spans = [("東京", 0, 2), ("へ", 2, 3), ("行きます", 3, 7), ("。", 7, 8)]
    words = [WordTimestamp(w, i * 0.3, i * 0.3 + 0.3, a, b) for i, (w, a, b) in enumerate(spans)]
    assert make_cues(words)[0].text == text
    without_offsets = [WordTimestamp(w.word, w.start, w.end) for w in words]
    assert make_cues(without_offsets)[0].text == text
    english = [WordTimestamp("New", 0, 0.3, 0, 3), WordTimestamp("York", 0.3, 0.6, 4, 8)]
    assert make_cues(english)[0].text == "New York"


def test_opening_marks_attach_forward():
    words = _words(
        ("He", 0, 0.2), ("(", 0.2, 0.2), ("quietly", 0.2, 0.6), (")", 0.6, 0.6), ("left", 0.6, 0.9)
    )
    words += _words(('"', 0.9, 0.9), ("Bye", 0.9, 1.2), ('"', 1.2, 1.2), (".", 1.2, 1.2))
    assert make_cues(words)[0].text == 'He (quietly) left "Bye".'
    abbreviation = _words(("(", 0, 0), ("Dr.", 0, 0.3), ("No", 0.3, 0.5), (")", 0.5, 0.5), ("said", 0.5, 0.8))
    assert [c.text for c in make_cues(abbreviation)] == ["(Dr. No) said"]


def test_timestamp_format():
    assert format_timestamp(0) == "00:00:00,000"
    assert format_timestamp(1.25) == "00:00:01,250"
    assert format_timestamp(3723.2504, ".") == "01:02:03.250"
    assert format_timestamp(59.9996) == "00:01:00,000"
    assert format_timestamp(360_000) == "100:00:00,000"
    assert format_timestamp(-0.2) == "00:00:00,000"


def test_vtt_escapes_markup():
    words = _words(("a", 0, 0.2), ("<b>", 0.2, 0.4), ("&", 0.4, 0.5), ("-->", 0.5, 0.6))
    vtt = to_vtt(words)
    assert "a &lt;b&gt; &amp; --&gt;" in vtt
    assert vtt.count("-->") == 1


def test_long_cues_wrap_onto_two_lines():
    words = [WordTimestamp(w, i * 0.3, i * 0.3 + 0.3) for i, w in enumerate(string.ascii_lowercase)]
    (cue,) = make_cues(words, max_duration=60)
    assert cue.text == "a b c d e f g h i j k l m\nn o p q r s t u v w x y z"


def test_empty_and_bad_inputs():
    assert to_srt([]) == ""
    assert to_vtt([]) == "WEBVTT\n"
    assert to_srt(_words((" ", 0, 1))) == ""
    with pytest.raises(ValueError, match="sentence"):
        to_srt(TWO_SENTENCES, level="paragraph")
    with pytest.raises(ValueError, match="positive"):
        to_vtt(TWO_SENTENCES, max_chars=0)


def test_source_spacing_around_punctuation_is_kept():
    words = [WordTimestamp("Bonjour", 0, 0.5, 0, 7), WordTimestamp("!", 0.5, 0.5, 8, 9)]
    assert make_cues(words)[0].text == "Bonjour !"
    assert make_cues(_words(("Tom", 0, 0.3), ("&", 0.3, 0.4), ("Jerry", 0.4, 0.8)))[0].text == "Tom & Jerry"
