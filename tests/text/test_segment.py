"""Sentences, paragraphs and chunking into pieces of at most 510 phonemes."""

from __future__ import annotations

import pytest
from fe_helpers import check_chunks

from koel.constants import MAX_PHONEMES
from koel.text.segment import Chunker, Item, sentences


def _sents(text: str) -> list[str]:
    return [text[s.start : s.end].strip() for s in sentences(text)]


def test_sentences_respect_abbreviations_and_initials() -> None:
    text = "Dr. Smith met J. K. Rowling at 5 p.m. Then they left! Did they? Yes… e.g. this stays. No. 5 too."
    assert _sents(text) == [
        "Dr. Smith met J. K. Rowling at 5 p.m.",
        "Then they left!",
        "Did they?",
        "Yes…",
        "e.g. this stays.",
        "No. 5 too.",
    ]


def test_paragraphs_and_lines() -> None:
    text = "Title line\nFirst sentence. Second\ncontinues here.\n\nNew paragraph."
    sents = list(sentences(text))
    assert [text[s.start : s.end].strip() for s in sents] == [
        "Title line",
        "First sentence.",
        "Second\ncontinues here.",
        "New paragraph.",
    ]
    assert [s.paragraph_end for s in sents] == [False, False, True, True]


def test_cjk_and_devanagari_sentence_marks() -> None:
    assert _sents("今日は晴れ。明日は雨！本当？") == ["今日は晴れ。", "明日は雨！", "本当？"]
    assert _sents("नमस्ते। आप कैसे हैं?") == ["नमस्ते।", "आप कैसे हैं?"]


def test_long_sentences_are_cut_before_g2p() -> None:
    text = "word " * 2000
    sents = list(sentences(text))
    assert all(s.end - s.start <= 600 for s in sents)
    assert [s.sentence_end for s in sents].count(True) == 1
    assert "".join(text[s.start : s.end] for s in sents).split() == text.split()


def _items(spec: list[tuple[str, bool]]) -> list[Item]:
    out, pos = [], 0
    for ps, space in spec:
        out.append(Item(ps, ps, pos, pos + len(ps), space))
        pos += len(ps) + (1 if space else 0)
    return out


def test_chunker_prefers_sentence_end_then_clause_then_word() -> None:
    # 4-phoneme words; the limit forces a cut. The last '.' wins over the later ','.
    spec = [("aaaa", True)] * 3 + [(".", True)] + [("bbbb", False), (",", True)] + [("cccc", True)] * 3
    items = _items(spec)
    source = " ".join(it.text for it in items)
    chunks = list(Chunker(source, "a", limit=30)(items))
    assert chunks[0].phonemes == "aaaa aaaa aaaa ."
    assert chunks[0].sentence_end
    assert not chunks[1].sentence_end or chunks[1].paragraph_end
    # No sentence end at all: cut after the comma.
    items = _items([("aaaa", True)] * 3 + [(",", True)] + [("bbbb", True)] * 4)
    chunks = list(Chunker("x" * 100, "a", limit=28)(items))
    assert chunks[0].phonemes.endswith(",")


def test_overlong_word_is_split_safely() -> None:
    ps = "ab " * 400  # one 'word' of 1200 phonemes
    items = [Item("huge", ps.strip(), 0, 4, True)]
    chunks = list(Chunker("huge", "a")(items))
    assert len(chunks) == 3
    assert all(len(c.phonemes) <= MAX_PHONEMES for c in chunks)
    assert "".join(c.phonemes.replace(" ", "") for c in chunks) == ps.replace(" ", "")
    assert all(c.words[0].text == "huge" for c in chunks)


@pytest.mark.parametrize("limit", [MAX_PHONEMES, 100, 20])
def test_english_chunks_keep_word_maps(frontend, limit: int) -> None:
    text = (
        "Dr. Smith paid $1,250.50 on 12/05/2024 at 9:30am; the meeting (in Room 101) ran 45 min. "
        "Then, after a short break—and some coffee—everyone went home.\n\n"
        "A new paragraph starts here. It has two sentences!"
    ) * 4
    chunks = list(frontend("a").chunks(text, max_phonemes=limit))
    check_chunks(text, chunks, limit)
    assert chunks[-1].paragraph_end and chunks[-1].sentence_end
    assert any(c.paragraph_end for c in chunks[:-1])
    money = " ".join(w.phonemes for c in chunks for w in c.words if w.text == "$1,250.50")
    assert "dˈɑləɹz" in money


def test_every_language_chunks_cleanly(frontend) -> None:
    texts = {
        "e": "Hola, ¿qué tal? Tengo 3,5 euros. " * 30,
        "f": "Bonjour « mon ami », il est 10h30. " * 30,
        "h": "नमस्ते, आप कैसे हैं? मेरे पास 25 रुपये हैं। " * 30,
        "i": "Ciao, come stai? Sono le 10:30. " * 30,
        "p": "Olá, tudo bem? Custa R$ 5,50. " * 30,
        "j": "今日は良い天気ですね。価格は3.5ドルです。" * 30,
        "z": "今天天气很好。价格是3.5元，电话13812345678。" * 30,
    }
    for lang, text in texts.items():
        chunks = list(frontend(lang).chunks(text))
        assert len(chunks) > 1, lang
        check_chunks(text, chunks)


def test_paragraph_ending_in_silence_still_ends_the_chunk(frontend) -> None:
    text = "First paragraph 😀\n\nSecond paragraph."
    chunks = list(frontend("a").chunks(text))
    assert [c.paragraph_end for c in chunks] == [True, True]
    assert chunks[0].words[-1].text == "😀" and chunks[0].words[-1].phonemes == ""
    check_chunks(text, chunks)
