"""Number normalisation for Japanese and Mandarin: forms misaki's G2P misreads or drops.

misaki's Japanese path reads digit runs but splits "3.5", "1,000" and "10:30" apart and keeps "%"
and "-" as symbols; its Chinese path (cn2an) reads "1,000" as "一,零" and "10:30" with a colon, and
reads phone numbers as one huge number. These rules fix those before G2P.
"""

from __future__ import annotations

import unicodedata

import regex

from koel.text.rules import Ctx, Rule, RuleNormalizer

_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"

_JA_LETTERS = dict(
    zip(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        [
            "エー",
            "ビー",
            "シー",
            "ディー",
            "イー",
            "エフ",
            "ジー",
            "エイチ",
            "アイ",
            "ジェー",
            "ケー",
            "エル",
            "エム",
            "エヌ",
            "オー",
            "ピー",
            "キュー",
            "アール",
            "エス",
            "ティー",
            "ユー",
            "ブイ",
            "ダブリュー",
            "エックス",
            "ワイ",
            "ゼット",
        ],
        strict=True,
    )
)
_JA_CURRENCY = {"$": "ドル", "＄": "ドル", "€": "ユーロ", "¥": "円", "￥": "円", "£": "ポンド", "₩": "ウォン"}
_JA_UNITS = {
    "km/h": "キロメートル毎時",
    "km": "キロメートル",
    "cm": "センチメートル",
    "mm": "ミリメートル",
    "m": "メートル",
    "kg": "キログラム",
    "mg": "ミリグラム",
    "g": "グラム",
    "ml": "ミリリットル",
    "l": "リットル",
    "°C": "度",
    "℃": "度",
    "°": "度",
    "GB": "ギガバイト",
    "MB": "メガバイト",
}
_ZH_CURRENCY = {"$": "美元", "＄": "美元", "€": "欧元", "¥": "元", "￥": "元", "£": "英镑", "₩": "韩元"}
_ZH_UNITS = {
    "km/h": "公里每小时",
    "km": "公里",
    "cm": "厘米",
    "mm": "毫米",
    "m": "米",
    "kg": "公斤",
    "mg": "毫克",
    "g": "克",
    "ml": "毫升",
    "l": "升",
    "°C": "摄氏度",
    "℃": "摄氏度",
    "°": "度",
    "GB": "GB",
    "MB": "MB",
}
_ZH_DIGITS = "零幺二三四五六七八九"


def _alt(keys: dict[str, str]) -> str:
    return "|".join(regex.escape(k) for k in sorted(keys, key=len, reverse=True))


def _ja_number(s: str) -> str:
    s = unicodedata.normalize("NFKC", s).replace(",", "")
    whole, _, frac = s.partition(".")
    return f"{whole}点{' '.join(frac)}" if frac else whole


def _ja_rules() -> list[Rule]:
    def money(m: regex.Match, c: Ctx) -> str:
        return _ja_number(m["n"]) + _JA_CURRENCY[m["cur"]]

    return [
        (
            "date",
            r"(?<!\d)(?P<y>\d{4})[/\-.](?P<mo>\d{1,2})[/\-.](?P<d>\d{1,2})(?!\d)",
            lambda m, c: f"{int(m['y'])}年{int(m['mo'])}月{int(m['d'])}日",
        ),
        (
            "time",
            r"(?<![\d:])(?P<h>[01]?\d|2[0-3])[:：](?P<m>[0-5]\d)(?![\d:])",
            lambda m, c: f"{int(m['h'])}時" + (f"{int(m['m'])}分" if int(m["m"]) else ""),
        ),
        ("money_prefix", rf"(?P<cur>[$＄€¥￥£₩])\s?(?P<n>{_NUM})", money),
        ("money_suffix", rf"(?P<n>{_NUM})\s?(?P<cur>[$€£])", money),
        (
            "percent",
            rf"(?P<s>[-−])?(?P<n>{_NUM})\s?[%％]",
            lambda m, c: ("マイナス" if m["s"] else "") + _ja_number(m["n"]) + "パーセント",
        ),
        (
            "unit",
            rf"(?P<s>(?<!\w)[-−])?(?P<n>{_NUM})\s?(?P<u>{_alt(_JA_UNITS)})(?![A-Za-z/])",
            lambda m, c: ("マイナス" if m["s"] else "") + _ja_number(m["n"]) + _JA_UNITS[m["u"]],
        ),
        ("signed", rf"(?<![\d.A-Za-z])[-−](?P<n>{_NUM})", lambda m, c: "マイナス" + _ja_number(m["n"])),
        (
            "number",
            rf"(?P<n>{_NUM})",
            lambda m, c: _ja_number(m["n"]) if "," in m["n"] or "." in m["n"] else None,
        ),
        (
            "acronym",
            r"(?<![A-Za-z])[A-Z]{2,5}(?![A-Za-z])",
            lambda m, c: "".join(_JA_LETTERS[x] for x in m.group(0)),
        ),
    ]


class JapaneseNormalizer(RuleNormalizer):
    """Decimals, grouped numbers, times, dates, money, percentages, units and acronyms for Japanese."""

    def __init__(self) -> None:
        super().__init__(_ja_rules(), pad=False)


def _zh_rules() -> list[Rule]:
    import cn2an  # only the Chinese front end needs it

    def han(s: str) -> str:
        s = unicodedata.normalize("NFKC", s).replace(",", "").replace("−", "-")
        try:
            return str(cn2an.transform(s, "an2cn"))
        except (ValueError, KeyError, IndexError):
            return "".join("零一二三四五六七八九"[int(x)] if x.isdigit() else x for x in s)

    def phone(m: regex.Match, c: Ctx) -> str:
        return " ".join("".join(_ZH_DIGITS[int(d)] for d in g) for g in regex.findall(r"\d+", m.group(0)))

    return [
        (
            "date",
            r"(?<!\d)(?P<y>\d{4})[/\-.](?P<mo>\d{1,2})[/\-.](?P<d>\d{1,2})(?!\d)",
            lambda m, c: han(f"{m['y']}年") + han(f"{int(m['mo'])}月{int(m['d'])}日"),
        ),
        (
            "time",
            r"(?<![\d:])(?P<h>[01]?\d|2[0-3])[:：](?P<m>[0-5]\d)(?![\d:])",
            lambda m, c: han(f"{int(m['h'])}点") + (han(f"{int(m['m'])}分") if int(m["m"]) else ""),
        ),
        ("phone", r"(?<!\d)(?:1[3-9]\d{9}|0\d{2,3}-\d{7,8}|\d{3}-\d{3,4}-\d{4})(?!\d)", phone),
        ("year", r"(?<!\d)(?P<y>\d{4})年", lambda m, c: han(m.group(0))),
        (
            "money_prefix",
            rf"(?P<cur>[$＄€¥￥£₩])\s?(?P<n>{_NUM})",
            lambda m, c: han(m["n"]) + _ZH_CURRENCY[m["cur"]],
        ),
        (
            "unit",
            rf"(?P<n>[-−]?{_NUM})\s?(?P<u>{_alt(_ZH_UNITS)})(?![A-Za-z/])",
            lambda m, c: han(m["n"]) + _ZH_UNITS[m["u"]],
        ),
        ("number", rf"(?<![\d.A-Za-z])[-−+]?{_NUM}(?:[%％]|/\d+)?", lambda m, c: han(m.group(0))),
    ]


class ChineseNormalizer(RuleNormalizer):
    """Grouped numbers, times, dates, phone numbers, money and units for Mandarin, via cn2an."""

    def __init__(self) -> None:
        super().__init__(_zh_rules(), pad=False)
