"""Number normalisation for the espeak-ng languages (es, fr, it, pt-br, hi).

espeak-ng reads plain integers well, but the punctuation splitting that Kokoro's pipeline does
breaks "3,5", "1.000.000" and "10:30" apart, drops the sign of "-5" and reads "Sr." with a full
stop. These rules rewrite such forms into words (or plain integers espeak reads correctly).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import regex
from num2words import num2words

from koel.text.normalize import _ROMAN, _roman_value
from koel.text.rules import Ctx, Rule, RuleNormalizer


def _months(names: str) -> tuple[str, ...]:
    return tuple(names.split())


@dataclass(frozen=True)
class _Lang:
    num2words: str | None
    decimal: str
    minus: str
    time: tuple[str, str]  # "{h} y {m}", "{h} en punto"
    date: str  # "{d} de {month} de {y}"
    months: tuple[str, ...]
    currencies: dict[str, tuple[str, str]]
    cents: tuple[str, str]  # "con", "céntimos"
    percent: str
    units: dict[str, tuple[str, str]]
    abbreviations: dict[str, str]
    ordinal_roman_max: int  # Roman numerals after names: ordinal up to this value, cardinal above
    thousands: str  # grouping separators
    decimal_marks: str
    symbols: dict[str, str] = field(default_factory=dict)


_UNITS_ES = {
    "km/h": ("kilómetro por hora", "kilómetros por hora"),
    "km": ("kilómetro", "kilómetros"),
    "cm": ("centímetro", "centímetros"),
    "mm": ("milímetro", "milímetros"),
    "m": ("metro", "metros"),
    "kg": ("kilogramo", "kilogramos"),
    "mg": ("miligramo", "miligramos"),
    "g": ("gramo", "gramos"),
    "ml": ("mililitro", "mililitros"),
    "l": ("litro", "litros"),
    "h": ("hora", "horas"),
    "min": ("minuto", "minutos"),
    "°C": ("grado Celsius", "grados Celsius"),
    "ºC": ("grado Celsius", "grados Celsius"),
    "°F": ("grado Fahrenheit", "grados Fahrenheit"),
    "°": ("grado", "grados"),
    "GB": ("gigabyte", "gigabytes"),
    "MB": ("megabyte", "megabytes"),
}
_LANGS: dict[str, _Lang] = {
    "e": _Lang(
        "es",
        "coma",
        "menos",
        ("{h} y {m}", "{h} en punto"),
        "{d} de {month} de {y}",
        _months("enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre"),
        {"€": ("euro", "euros"), "$": ("dólar", "dólares"), "£": ("libra", "libras"), "¥": ("yen", "yenes")},
        ("con", "céntimos"),
        "por ciento",
        _UNITS_ES,
        {
            "Sr.": "señor",
            "Sra.": "señora",
            "Srta.": "señorita",
            "Dr.": "doctor",
            "Dra.": "doctora",
            "Ud.": "usted",
            "Uds.": "ustedes",
            "EE. UU.": "Estados Unidos",
            "EE.UU.": "Estados Unidos",
            "etc.": "etcétera",
            "aprox.": "aproximadamente",
            "pág.": "página",
            "núm.": "número",
            "Av.": "avenida",
        },
        10,
        ".",
        ",",
        {"&": "y", "@": "arroba"},
    ),
    "f": _Lang(
        "fr",
        "virgule",
        "moins",
        ("{h} heures {m}", "{h} heures"),
        "{d} {month} {y}",
        _months("janvier février mars avril mai juin juillet août septembre octobre novembre décembre"),
        {"€": ("euro", "euros"), "$": ("dollar", "dollars"), "£": ("livre", "livres"), "¥": ("yen", "yens")},
        ("", ""),
        "pour cent",
        {
            "km/h": ("kilomètre heure", "kilomètres heure"),
            "km": ("kilomètre", "kilomètres"),
            "cm": ("centimètre", "centimètres"),
            "mm": ("millimètre", "millimètres"),
            "m": ("mètre", "mètres"),
            "kg": ("kilogramme", "kilogrammes"),
            "g": ("gramme", "grammes"),
            "ml": ("millilitre", "millilitres"),
            "l": ("litre", "litres"),
            "°C": ("degré Celsius", "degrés Celsius"),
            "°": ("degré", "degrés"),
            "Go": ("gigaoctet", "gigaoctets"),
            "Mo": ("mégaoctet", "mégaoctets"),
        },
        {"M.": "monsieur", "MM.": "messieurs", "Mme": "madame", "Mlle": "mademoiselle", "etc.": "et cetera"},
        1,
        ". \u00a0\u202f",
        ",",
        {"&": "et", "@": "arobase"},
    ),
    "i": _Lang(
        "it",
        "virgola",
        "meno",
        ("{h} e {m}", "{h} in punto"),
        "{d} {month} {y}",
        _months(
            "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre dicembre"
        ),
        {
            "€": ("euro", "euro"),
            "$": ("dollaro", "dollari"),
            "£": ("sterlina", "sterline"),
            "¥": ("yen", "yen"),
        },
        ("e", "centesimi"),
        "per cento",
        {
            "km/h": ("chilometro orario", "chilometri orari"),
            "km": ("chilometro", "chilometri"),
            "cm": ("centimetro", "centimetri"),
            "mm": ("millimetro", "millimetri"),
            "m": ("metro", "metri"),
            "kg": ("chilogrammo", "chilogrammi"),
            "g": ("grammo", "grammi"),
            "l": ("litro", "litri"),
            "°C": ("grado Celsius", "gradi Celsius"),
            "°": ("grado", "gradi"),
        },
        {"Sig.": "signor", "Sig.ra": "signora", "Dott.": "dottor", "Prof.": "professor", "ecc.": "eccetera"},
        99,
        ".",
        ",",
        {"&": "e", "@": "chiocciola"},
    ),
    "p": _Lang(
        "pt_BR",
        "vírgula",
        "menos",
        ("{h} e {m}", "{h} horas"),
        "{d} de {month} de {y}",
        _months("janeiro fevereiro março abril maio junho julho agosto setembro outubro novembro dezembro"),
        {
            "€": ("euro", "euros"),
            "$": ("dólar", "dólares"),
            "R$": ("real", "reais"),
            "£": ("libra", "libras"),
            "¥": ("iene", "ienes"),
        },
        ("e", "centavos"),
        "por cento",
        {
            "km/h": ("quilômetro por hora", "quilômetros por hora"),
            "km": ("quilômetro", "quilômetros"),
            "cm": ("centímetro", "centímetros"),
            "mm": ("milímetro", "milímetros"),
            "m": ("metro", "metros"),
            "kg": ("quilo", "quilos"),
            "g": ("grama", "gramas"),
            "l": ("litro", "litros"),
            "°C": ("grau Celsius", "graus Celsius"),
            "°": ("grau", "graus"),
        },
        {
            "Sr.": "senhor",
            "Sra.": "senhora",
            "Dr.": "doutor",
            "Dra.": "doutora",
            "etc.": "etcétera",
            "Av.": "avenida",
        },
        10,
        ".",
        ",",
        {"&": "e", "@": "arroba"},
    ),
    "h": _Lang(
        None,
        "दशमलव",
        "माइनस",
        ("{h} बजकर {m} मिनट", "{h} बजे"),
        "{d} {month} {y}",
        _months("जनवरी फ़रवरी मार्च अप्रैल मई जून जुलाई अगस्त सितंबर अक्टूबर नवंबर दिसंबर"),
        {"₹": ("रुपया", "रुपये"), "$": ("डॉलर", "डॉलर"), "€": ("यूरो", "यूरो"), "£": ("पाउंड", "पाउंड")},
        ("और", "पैसे"),
        "प्रतिशत",
        {
            "km": ("किलोमीटर", "किलोमीटर"),
            "kg": ("किलोग्राम", "किलोग्राम"),
            "cm": ("सेंटीमीटर", "सेंटीमीटर"),
            "m": ("मीटर", "मीटर"),
            "g": ("ग्राम", "ग्राम"),
            "l": ("लीटर", "लीटर"),
            "°C": ("डिग्री सेल्सियस", "डिग्री सेल्सियस"),
        },
        {"डॉ.": "डॉक्टर", "श्री.": "श्री"},
        0,
        ",",
        ".",
        {"&": "और"},
    ),
}
_CENTURY = {"e": "siglo", "f": "siècle", "i": "secolo", "p": "século", "h": "सदी"}


def _rules(code: str) -> list[Rule]:
    L = _LANGS[code]
    group = "[" + regex.escape(L.thousands) + "]"
    dec = "[" + regex.escape(L.decimal_marks) + "]"
    # A number: grouped thousands (1.000.000) or plain digits, with an optional decimal part.
    num = rf"(?:\d{{1,3}}(?:{group}\d{{3}})+|\d+)(?:{dec}\d+)?"
    if code == "h":  # Indian grouping too: 12,34,567
        num = r"(?:\d{1,2}(?:,\d{2})+,\d{3}|\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
    if code in "eip":  # "3.5" with a point is a decimal too, unless it has three digits (1.000)
        num = rf"(?:\d{{1,3}}(?:{group}\d{{3}})+|\d+)(?:{dec}\d+|\.\d{{1,2}}(?!\d))?"

    def number(s: str) -> str:
        """A written number as espeak-friendly text: plain integers, decimals spelled out."""
        s = s.strip()
        m = regex.fullmatch(rf"(\d{{1,3}}(?:{group}\d{{2,3}})+|\d+)(?:(?:{dec}|\.)(\d+))?", s)
        if not m:
            return s
        whole = regex.sub(r"\D", "", m.group(1))
        if m.group(2) is None:
            return whole
        frac = m.group(2)
        frac_words = " ".join(frac) if frac.startswith("0") or len(frac) > 3 else frac
        return f"{whole} {L.decimal} {frac_words}"

    def is_one(s: str) -> bool:
        return regex.sub(r"\D", "", s) == "1"

    def money(amount: str, cur: str) -> str:
        one, many = L.currencies[cur]
        m = regex.fullmatch(rf"(.+?)(?:{dec}|\.)(\d\d)", amount)
        if m:
            whole, cents = number(m.group(1)), m.group(2)
            unit = one if is_one(m.group(1)) else many
            joiner, cent_word = L.cents
            if int(cents) == 0:
                return f"{whole} {unit}"
            tail = f"{int(cents)} {cent_word}".strip()
            return " ".join(x for x in (whole, unit, joiner, tail) if x)
        return f"{number(amount)} {one if is_one(amount) else many}"

    def roman(m: regex.Match, c: Ctx) -> str | None:
        r = m["r"]
        prev = c.prev_word(m.start())
        value = _roman_value(r)
        if prev.lower() == _CENTURY.get(code):
            return str(value)
        if (
            not (prev[:1].isupper() and prev[1:].islower())
            or (len(r) == 1 and r != "I")
            or L.num2words is None
        ):
            return None
        if code == "f":
            return "premier" if value == 1 else str(value)
        if value <= L.ordinal_roman_max:
            return str(num2words(value, lang=L.num2words, to="ordinal"))
        return str(value)

    def time(m: regex.Match, c: Ctx) -> str:
        h, mi = int(m["h"]), int(m["m"])
        return (L.time[1] if mi == 0 else L.time[0]).format(h=h, m=mi)

    def date(m: regex.Match, c: Ctx) -> str | None:
        d, mo = int(m["d"]), int(m["mo"])
        if not (1 <= d <= 31 and 1 <= mo <= 12):
            return None
        day = "1er" if code == "f" and d == 1 else str(d)
        return L.date.format(d=day, month=L.months[mo - 1], y=m["y"])

    def unit(m: regex.Match, c: Ctx) -> str:
        one, many = L.units[m["u"]]
        sign = f"{L.minus} " if m["s"] else ""
        return f"{sign}{number(m['n'])} {one if is_one(m['n']) else many}"

    cur_alt = "|".join(regex.escape(k) for k in sorted(L.currencies, key=len, reverse=True))
    unit_alt = "|".join(regex.escape(k) for k in sorted(L.units, key=len, reverse=True))
    abbr_alt = "|".join(regex.escape(k) for k in sorted(L.abbreviations, key=len, reverse=True))
    rules: list[Rule] = [
        (
            "date",
            r"(?<![\w./])(?P<d>\d{1,2})[/.](?P<mo>\d{1,2})[/.](?P<y>\d{4})(?![\w/])",
            date,
        ),
        ("time", r"(?<![\w:])(?P<h>[01]?\d|2[0-3])(?::|h)(?P<m>[0-5]\d)(?![\d:])", time),
        ("money_prefix", rf"(?P<cur>{cur_alt})\s?(?P<n>{num})", lambda m, c: money(m["n"], m["cur"])),
        (
            "money_suffix",
            rf"(?<![\w.,])(?P<n>{num})\s?(?P<cur>{cur_alt})(?!\w)",
            lambda m, c: money(m["n"], m["cur"]),
        ),
        (
            "percent",
            rf"(?P<s>(?<![\w.,])[-−])?(?P<n>{num})\s?%",
            lambda m, c: f"{L.minus + ' ' if m['s'] else ''}{number(m['n'])} {L.percent}",
        ),
        ("unit", rf"(?P<s>(?<![\w.,])[-−])?(?P<n>{num})\s?(?P<u>{unit_alt})(?![\w/])", unit),
        ("signed", rf"(?<![\w.,])[-−](?P<n>{num})(?!\w)", lambda m, c: f"{L.minus} {number(m['n'])}"),
        ("number", rf"(?<![\w.,])(?P<n>{num})(?![\w]|[.,]\d)", lambda m, c: number(m["n"])),
        ("roman", rf"(?<![\w.'-])(?P<r>{_ROMAN})(?![\w'-])", roman),
        ("symbol", r"[&@]", lambda m, c: f" {L.symbols.get(m.group(0), '')} "),
    ]
    if abbr_alt:

        def abbr(m: regex.Match, c: Ctx) -> str:
            end = "." if m.group(0).endswith(".") and c.at_end(m.end()) else ""
            return L.abbreviations[m.group(0)] + end

        rules.insert(0, ("abbr", rf"(?<![\w.])(?:{abbr_alt})(?![\w])", abbr))
    if code == "f":
        rules.insert(
            0,
            (
                "roman_ordinal",
                rf"(?<![\w.'-])(?P<r>{_ROMAN})(?:e|ème|ᵉ)(?!\w)",
                lambda m, c: (
                    None
                    if len(m["r"]) == 1 and m["r"] not in "IVX"  # "Le", "Ce", "De" are words
                    else str(num2words(_roman_value(m["r"]), lang="fr", to="ordinal"))
                ),
            ),
        )
        rules.insert(
            0,
            (
                "ordinal",
                r"(?<![\w.])(?P<n>\d+)(?:er|re|ère|e|ème|ᵉ|ᵉʳ|è)(?!\w)",
                lambda m, c: str(num2words(int(m["n"]), lang="fr", to="ordinal")),
            ),
        )
    if code in "ep":
        rules.insert(0, ("ordinal_dot", r"(?<![\w.])(?P<n>\d+)\.(?P<o>[ºª°])", lambda m, c: m["n"] + m["o"]))
    return rules


class IntlNormalizer(RuleNormalizer):
    """Numbers, times, dates, money, units and common abbreviations for one espeak language."""

    def __init__(self, code: str) -> None:
        if code not in _LANGS:
            raise KeyError(f"no number rules for language {code!r}")
        super().__init__(_rules(code))
