"""English normalisation: numbers, dates, times, money, units, abbreviations, URLs to spoken words.

``EnglishNormalizer(text)`` returns spans (see spans.py) so every spoken word keeps the source
characters it came from. Rules are tried in priority order at each position; a rule whose handler
declines (returns None) lets the next rule try the same position.
"""

from __future__ import annotations

import regex

from koel.text import en_datetime as D
from koel.text import en_tables as T
from koel.text import numbers_en as N
from koel.text.rules import Ctx, Handler, RuleNormalizer

NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_UNIT_ALT = "|".join(regex.escape(u) for u in sorted(T.UNITS, key=len, reverse=True))
_MONTH_ALT = "|".join([*T.MONTHS, *(m[:3] for m in T.MONTHS), "Sept"])
_CUR_ALT = r"US\$|A\$|C\$|R\$|[$€£¥₹₩₽₺₿]"
_CODE_ALT = "|".join(T.CURRENCY_CODES)
_MAG_WORDS = r"thousand|million|billion|trillion|bn|mn|mil|tn"
_MAG = rf"(?:(?P<{{0}}>[kKmMbBT])|\s?(?P<{{0}}w>{_MAG_WORDS}))(?!\w)"
_ABBR_ALT = "|".join(sorted(T.ABBREVIATIONS, key=len, reverse=True))
_DOTTED_ALT = "|".join(regex.escape(a).replace(r"\.", r"\.?") for a in T.DOTTED_ABBREVIATIONS)
_NEEDS_NUMBER = frozenset(
    {"p", "pp", "Ch", "ch", "Sec", "Fig", "fig", "Figs", "Vol", "vol", "Vols", "Op", "Eq"}
)
_NEEDS_COMMA_OR_NUMBER = frozenset({"Mon", "Tue", "Tues", "Wed", "Thu", "Thur", "Thurs", "Fri", "min", "est"})
_URL_SYMBOLS = {
    ".": "dot",
    "/": "slash",
    "-": "dash",
    "_": "underscore",
    ":": "colon",
    "?": "question mark",
    "=": "equals",
    "&": "and",
    "#": "hash",
    "%": "percent",
    "~": "tilde",
    "+": "plus",
    "@": "at",
}
_TENS_PLURAL = [
    "",
    "tens",
    "twenties",
    "thirties",
    "forties",
    "fifties",
    "sixties",
    "seventies",
    "eighties",
    "nineties",
]
_ROMAN = r"(?=[MDCLXVI])M{0,4}(?:CM|CD|D?C{0,3})(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3})"
_ROMAN_VALUES = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}


def _roman_value(s: str) -> int:
    total = 0
    for i, c in enumerate(s):
        v = _ROMAN_VALUES[c]
        total += -v if i + 1 < len(s) and _ROMAN_VALUES[s[i + 1]] > v else v
    return total


def _spell(word: str) -> str:
    return " ".join(c.upper() for c in word)


def _url_words(s: str, british: bool) -> str:
    out: list[str] = []
    for part in regex.findall(r"[^\W\d_]+|\d+|[^\w\s]|_", s):
        if part[0].isdigit():
            out.append(N.cardinal(int(part), british) if len(part) <= 4 else N.digits(part))
        elif part in _URL_SYMBOLS:
            out.append(_URL_SYMBOLS[part])
        elif part.lower() == "www":
            out.append("W W W")
        elif part.lower() in T.TLD_WORDS and len(part) <= 2 and out and out[-1] == "dot":
            out.append(_spell(part))  # .io, .ai, .uk are spelled; .com, .dev, .org are words
        elif regex.search(r"[aeiouyAEIOUY]", part) and len(part) > 1:
            out.append(part.lower() if part.isupper() and len(part) > 4 else part)
        elif part.isalpha():
            out.append(_spell(part))
    return " ".join(out)


def _url(m: regex.Match, c: Ctx) -> str:
    s = regex.sub(r"^(?i:https?|ftp)://", "", m.group(0)).rstrip("/")
    return _url_words(s, c.british)


def _email(m: regex.Match, c: Ctx) -> str:
    local, _, domain = m.group(0).partition("@")
    return f"{_url_words(local, c.british)} at {_url_words(domain, c.british)}"


def _phone(m: regex.Match, c: Ctx) -> str | None:
    groups = regex.findall(r"\d+", m.group(0))
    if sum(len(g) for g in groups) < 7:
        return None
    words = ", ".join(N.digits(g) for g in groups)
    return ("plus " + words) if m.group(0).startswith("+") else words


def _money_units(cur: str) -> tuple[str, str, str, str]:
    return T.CURRENCY_SYMBOLS[cur]


def _magnitude(m: regex.Match, name: str) -> str:
    key = m[name] or m[name + "w"]
    return T.MAGNITUDES[key] if key else ""


def _money_prefix(m: regex.Match, c: Ctx) -> str:
    units = _money_units(m["cur"])
    neg = "minus " if m["neg"] else ""
    if m["amt2"]:
        mag1, mag2 = _magnitude(m, "mag"), _magnitude(m, "mag2")
        first = N.number(m["amt"].replace(",", ""), c.british) + (f" {mag1}" if mag1 else "")
        return f"{neg}{first} to {N.money(m['amt2'], units, mag2, c.british)}"
    return neg + N.money(m["amt"], units, _magnitude(m, "mag"), c.british)


def _money_suffix(m: regex.Match, c: Ctx) -> str:
    cur = m["cur"] if m["cur"] else T.CURRENCY_CODES[m["code"]]
    return N.money(m["amt"], _money_units(cur), _magnitude(m, "mag"), c.british)


def _percent(m: regex.Match, c: Ctx) -> str:
    sign = {"-": "minus ", "−": "minus ", "+": "plus ", "±": "plus or minus ", None: ""}[m["sign"]]
    out = sign + N.number(m["num"], c.british)
    if m["num2"]:
        out += " to " + N.number(m["num2"], c.british)
    return out + " percent"


def _unit_words(num: str, unit: str) -> str:
    one, many = T.UNITS[unit]
    return one if N.is_one(num) else many


def _range(m: regex.Match, c: Ctx) -> str | None:
    a, b = m["a"], m["b"]
    if "," not in a + b and "." not in a + b and len(a) == 4 and 1100 <= int(a) <= 2099:
        if len(b) == 4 and int(a) <= int(b) <= 2099:
            out = f"{N.year(int(a), c.british)} to {N.year(int(b), c.british)}"
        elif len(b) == 2:
            out = f"{N.year(int(a), c.british)} to {N.cardinal(int(b), c.british) if int(b) >= 10 else 'oh ' + b[1]}"
        else:
            out = f"{N.number(a, c.british)} to {N.number(b, c.british)}"
    else:
        out = f"{N.number(a, c.british)} to {N.number(b, c.british)}"
    if m["unit"]:
        out += " " + _unit_words(b, m["unit"])
    return out


def _unit(m: regex.Match, c: Ctx) -> str | None:
    unit, num = m["unit"], m["num"]
    if unit == "x" and m["sp"]:
        return None
    sign = "minus " if m["sign"] in ("-", "−") else ("plus " if m["sign"] == "+" else "")
    out = sign + N.number(num, c.british) + " " + _unit_words(num, unit)
    if unit in ("°C", "°F", "ºC", "ºF", "° C", "° F", "℃", "℉", "°", "º") and N.is_one(num) and sign:
        out = out.replace("degree ", "degrees ").replace("degree", "degrees")
    return out


def _ordinal(m: regex.Match, c: Ctx) -> str:
    return N.ordinal(int(m["n"].replace(",", "")), c.british)


def _decade(m: regex.Match, c: Ctx) -> str:
    if m["c"]:
        century, d = int(m["c"]), int(m["d"])
        if d == 0:
            return "two thousands" if century == 20 else N.cardinal(century) + " hundreds"
        return N.cardinal(century) + " " + _TENS_PLURAL[d]
    return _TENS_PLURAL[int(m["d2"] or m["d3"])]


def _fraction(m: regex.Match, c: Ctx) -> str | None:
    n, d = int(m["n"]), int(m["d"])
    if m["w"]:
        return N.mixed_fraction(int(m["w"]), n, d, c.british) if 0 < n < d else None
    if (n, d) == (24, 7):
        return "twenty-four seven"
    if d in (2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 16, 32, 64, 100) and 0 < n < d:
        return N.fraction(n, d, c.british)
    if 1 <= n <= 12 and 1 <= d <= 31 and not c.british:
        return D.date(n, d, None, c)
    if 1 <= d <= 12 and 1 <= n <= 31 and c.british:
        return D.date(d, n, None, c)
    return f"{N.cardinal(n, c.british)} over {N.cardinal(d, c.british)}"


def _vulgar(m: regex.Match, c: Ctx) -> str:
    n, d = N.VULGAR_FRACTIONS[m["v"]]
    if m["w"]:
        return N.mixed_fraction(int(m["w"]), n, d, c.british)
    return N.fraction(n, d, c.british)


def _version(m: regex.Match, c: Ctx) -> str:
    parts = m["v"].split(".")
    if len(parts) == 4 and m["pre"] is None and all(len(p) <= 3 and int(p) <= 255 for p in parts):
        return " dot ".join(N.digits(p) for p in parts)  # an IPv4 address
    words = " point ".join(N.integer_words(p, c.british) for p in parts)
    return ("version " + words) if m["pre"] else words


def _code(m: regex.Match, c: Ctx) -> str | None:
    letters, num = m["l"], m["n"]
    if letters.lower() in ("am", "pm"):
        return None
    return f"{letters} {N.integer_words(num, c.british)}"


def _num_letters(m: regex.Match, c: Ctx) -> str | None:
    num, letters = m["n"], m["l"]
    return f"{N.integer_words(num, c.british)} {_spell(letters)}"


def _signed(m: regex.Match, c: Ctx) -> str:
    word = {"-": "minus", "−": "minus", "+": "plus", "±": "plus or minus"}[m["s"]]
    return f"{word} {N.number(m['n'], c.british)}"


def _times(m: regex.Match, c: Ctx) -> str:
    return f"{N.number(m['a'], c.british)} by {N.number(m['b'], c.british)}"


_VERSION_WORDS = frozenset(
    [
        "version",
        "Version",
        "v",
        "release",
        "Release",
        "Python",
        "iOS",
        "Android",
        "Java",
        "Windows",
        "macOS",
        "kernel",
    ]
)


def _number(m: regex.Match, c: Ctx) -> str:
    n = m["n"]
    if "." in n and "," not in n and c.prev_word(m.start()) in _VERSION_WORDS:
        return " point ".join(N.integer_words(p, c.british) for p in n.split("."))  # "Python 3.11"
    if n.startswith("."):
        return "point " + N.digits(n[1:])
    if n.isdigit() and len(n) == 4 and 1100 <= int(n) <= 2099 and not n.startswith("0"):
        return N.year(int(n), c.british)
    return N.number(n, c.british)


def _to(m: regex.Match, c: Ctx) -> str | None:
    before = c.text[: m.start()].rstrip().lower()
    if regex.search(r"(?:\d|%|[ap]\.?m\.?)$", before):
        return " to "
    return None


def _dotted_abbr(m: regex.Match, c: Ctx) -> str:
    key = m.group(0).lower()
    key = key if key in T.DOTTED_ABBREVIATIONS else key + "."
    out = T.DOTTED_ABBREVIATIONS.get(key, m.group(0))
    return out + "." if c.at_end(m.end()) else out


def _abbr(m: regex.Match, c: Ctx) -> str | None:
    a = m["a"]
    nxt = c.next_word(m.end())
    after = c.text[m.end() :]
    if a in _NEEDS_NUMBER and not regex.match(r"\s*\d", after):
        return None
    if a in _NEEDS_COMMA_OR_NUMBER and not regex.match(r"\s*[\d,]", after):
        return None
    if a == "Dr":
        prev = c.prev_word(m.start())
        out = "Doctor" if nxt[:1].isupper() or not prev[:1].isupper() else "Drive"
    elif a == "St":
        prev = c.prev_word(m.start())
        prev = "" if prev.endswith(".") else prev
        saint = nxt[:1].isupper() and not (prev[:1].isupper() or prev[:1].isdigit())
        out = "Saint" if saint else "Street"
    elif a == "No":
        if not regex.match(r"\s*\d", after):
            return None
        out = "number"
    elif a in ("Mr", "Mrs", "Ms") and not m["dot"]:
        out = T.ABBREVIATIONS[a]
    else:
        if not m["dot"] and a not in ("vs", "etc", "approx"):
            return None
        if a not in T.ABBREVIATIONS:
            return None
        out = T.ABBREVIATIONS[a]
    if m["dot"] and c.at_end(m.end()):
        out += "."
    return out


def _roman(m: regex.Match, c: Ctx) -> str | None:
    r = m["r"]
    prev = c.prev_word(m.start()).rstrip(".")
    value = _roman_value(r)
    if prev in T.REGNAL_NAMES:
        return "the " + N.ordinal(value)
    if prev in T.ROMAN_KEYWORDS or prev.upper() in {k.upper() for k in T.ROMAN_KEYWORDS if len(k) > 3}:
        return N.cardinal(value)
    if len(r) >= 2 and set(r) <= {"I", "V", "X"} and prev[:1].isupper() and prev[1:].islower():
        return N.cardinal(value)
    return None


_SYMBOLS = {
    "&": " and ",
    "@": " at ",
    "=": " equals ",
    "≈": " approximately ",
    "±": " plus or minus ",
    "×": " times ",
    "÷": " divided by ",
    "≤": " less than or equal to ",
    "≥": " greater than or equal to ",
    "≠": " not equal to ",
    "§": " section ",
    "¶": " paragraph ",
    "°": " degrees ",
    "%": " percent ",
    "™": " ",
    "®": " ",
    "©": " ",
    "|": ", ",
    "\\": " ",
    "*": " ",
    "^": " ",
    "`": " ",
    "~": " ",
    "_": " ",
    "[": "(",
    "]": ")",
    "{": "(",
    "}": ")",
    "<": " ",
    ">": " ",
    "•": " ",
    "·": " ",
    "→": " to ",
    "←": " ",
    "--": "—",
    "/": " or ",
    "#": " number ",
    "+": " plus ",
}


def _symbol(m: regex.Match, c: Ctx) -> str | None:
    s = m.group(0)
    if s in ("<", ">") and regex.match(r"\s*\d", c.text[m.end() :]):
        return " less than " if s == "<" else " greater than "
    if s == "~" and regex.match(r"\s*[\d$€£¥₹]", c.text[m.end() :]):
        return " about "
    if s == "#" and not regex.match(r"\d", c.text[m.end() :]):
        return " hashtag " if regex.match(r"[^\W\d_]", c.text[m.end() :]) else " "
    if s == "/" and not (m.start() > 0 and c.text[m.start() - 1].isalnum()):
        return " "
    if (
        s == "/"
        and c.text[: m.start()].lower().endswith("and")
        and c.text[m.end() :].lower().startswith("or")
    ):
        return " "
    return _SYMBOLS[s]


def _w_slash(m: regex.Match, c: Ctx) -> str:
    return "without" if m.group(0).lower() == "w/o" else "with"


_MONEY_PREFIX = (
    rf"(?P<neg>(?<![\w.])[-−])?(?P<cur>{_CUR_ALT})\s?(?P<amt>{NUM})(?:{_MAG.format('mag')})?"
    rf"(?:\s?[-–]\s?(?:{_CUR_ALT})?\s?(?P<amt2>{NUM})(?:{_MAG.format('mag2')})?)?"
)
_RULES: list[tuple[str, str, Handler]] = [
    ("url", r"(?i:\b(?:https?://|ftp://|www\.))[^\s<>\"'“”]*[^\s<>\"'“”.,;:!?)\]]", _url),
    ("email", r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}(?![\w@])", _email),
    (
        "domain",
        r"(?<![\w@./-])(?:[A-Za-z0-9-]+\.)+(?i:com|org|net|io|ai|dev|edu|gov|app|info|co\.uk)"
        r"(?:/[^\s<>\"']*[^\s<>\"'.,;:!?)\]])?(?![\w@-])",
        _url,
    ),
    (
        "phone",
        r"(?<![\w.+-])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?![\w-]|\.\d)"
        r"|(?<![\w.+-])\+\d{1,3}(?:[\s.-]\(?\d{1,4}\)?){2,5}(?![\w-]|\.\d)"
        r"|(?<![\w.+/-])\d{3}-\d{4}(?![\w-]|\.\d)",
        _phone,
    ),
    ("date_iso", r"(?<![\w.-])(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})(?![\w-])", D.date_iso),
    (
        "date_numeric",
        r"(?<![\w./-])(?P<a>\d{1,2})(?P<sep>[/.])(?P<b>\d{1,2})(?P=sep)(?P<y>\d{4}|\d{2})(?![\w/]|[.-]\d)",
        D.date_numeric,
    ),
    (
        "date_words",
        rf"\b(?P<mon>{_MONTH_ALT})\.?\s+(?P<day>[0-3]?\d)(?:st|nd|rd|th)?(?!\d|:)\b(?:,?\s+(?P<yr>\d{{4}})\b)?",
        D.date_words,
    ),
    (
        "date_day_first",
        rf"(?<![\w.])(?P<day>[0-3]?\d)(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<mon>{_MONTH_ALT})\b\.?(?:,?\s+(?P<yr>\d{{4}})\b)?",
        D.date_day_first,
    ),
    (
        "time",
        r"(?<![\w.:])(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)(?::(?P<s>[0-5]\d))?(?![\d:])"
        r"(?:\s?(?P<ap>[AaPp])\.?\s?[Mm]\b\.?)?",
        D.time,
    ),
    (
        "ratio",
        r"(?<![\w.:])(?P<a>\d+):(?P<b>\d+)(?![\w:]|\.\d)",
        lambda m, c: f"{N.cardinal(int(m['a']), c.british)} to {N.cardinal(int(m['b']), c.british)}",
    ),
    ("clock_ampm", r"(?<![\w.])(?P<h>1[0-2]|0?[1-9])\s?(?P<ap>[AaPp])\.?\s?[Mm](?:\.|\b)", D.clock_ampm),
    ("money_prefix", _MONEY_PREFIX, _money_prefix),
    (
        "money_suffix",
        rf"(?<![\w.])(?P<amt>{NUM})(?:{_MAG.format('mag')})?\s?(?:(?P<cur>[€£$¢¥₹₩₽])|(?P<code>{_CODE_ALT})\b)",
        _money_suffix,
    ),
    (
        "money_code",
        rf"\b(?P<code>{_CODE_ALT})\s?(?P<amt>{NUM})(?:{_MAG.format('mag')})?",
        lambda m, c: N.money(
            m["amt"], _money_units(T.CURRENCY_CODES[m["code"]]), _magnitude(m, "mag"), c.british
        ),
    ),
    (
        "percent",
        rf"(?P<sign>(?<![\w.])[-−+±])?(?P<num>{NUM})(?:\s?[-–]\s?(?P<num2>{NUM}))?\s?(?:%|\s?per\s?cent\b)",
        _percent,
    ),
    (
        "range",
        rf"(?<![\w.,/-])(?P<a>{NUM})\s?[-–—]\s?(?P<b>{NUM})(?![\w/]|[.,]\d|[-–]\d)(?:\s?(?P<unit>{_UNIT_ALT})(?![\w/²³]))?",
        _range,
    ),
    ("ordinal", r"(?<![\w.])(?P<n>\d{1,3}(?:,\d{3})+|\d+)(?:st|nd|rd|th|ST|ND|RD|TH)\b", _ordinal),
    ("decade", r"(?<![\w.])(?:(?P<c>1\d|20)(?P<d>\d)0|'(?P<d2>[1-9])0|(?P<d3>[2-9])0)'?s\b", _decade),
    ("vulgar", r"(?<![\w.])(?:(?P<w>\d+)\s?)?(?P<v>[½⅓⅔¼¾⅕⅖⅗⅘⅙⅚⅐⅛⅜⅝⅞⅑⅒])", _vulgar),
    (
        "unit",
        rf"(?P<sign>(?<![\w.])[-−+])?(?P<num>{NUM})(?P<sp>\s)?(?P<unit>{_UNIT_ALT})(?![\w/²³])(?:\.(?=\s+[a-z]))?",
        _unit,
    ),
    ("fraction", r"(?<![\w./])(?:(?P<w>\d+)[\s-])?(?P<n>\d+)/(?P<d>\d+)(?![\w/]|\.\d)", _fraction),
    (
        "version",
        r"(?<![\w.])(?P<pre>[vV])?(?P<v>\d+(?:\.\d+){2,}|(?<=[vV])\d+(?:\.\d+)+)(?![\w]|\.\d)",
        _version,
    ),
    ("code", r"(?<![\w.-])(?P<l>[^\W\d_]{1,8})-(?P<n>\d+)(?![\w-]|[.,]\d)", _code),
    (
        "letters_num",
        r"(?<![\w.])(?P<l>[A-Z]{1,3})(?P<n>\d{1,4})(?![\w.]|[.,]\d)",
        lambda m, c: f"{m['l']} {N.integer_words(m['n'], c.british)}",
    ),
    ("num_letters", r"(?<![\w.])(?P<n>\d+)(?P<l>[A-Za-z]{1,3})(?!\w)", _num_letters),
    ("times", rf"(?<![\w.])(?P<a>{NUM})\s?[x×]\s?(?P<b>{NUM})(?![\w])", _times),
    ("signed", rf"(?<![\w.,)%])(?P<s>[-−+±])(?P<n>{NUM})(?![\w])", _signed),
    ("number", rf"(?<![\w.])(?P<n>{NUM}|\.\d+)(?![\w])", _number),
    ("to", r"(?<=\S)[-–](?=\d)", _to),
    ("dotted_abbr", rf"(?i)(?<![\w.])(?:{_DOTTED_ALT})(?![\w])", _dotted_abbr),
    ("w_slash", r"(?<![\w/])(?i:w/o|w/)(?=\s)", _w_slash),
    ("abbr", rf"(?<![\w.])(?P<a>Dr|St|No|{_ABBR_ALT})(?P<dot>\.)?(?![\w])", _abbr),
    ("roman", rf"(?<![\w.'’-])(?P<r>{_ROMAN})(?![\w'’-])", _roman),
    # Emoji and pictographs are not read out (espeak would say "grinning face" for each one).
    (
        "emoji",
        r"[\p{Extended_Pictographic}\p{So}][\p{Extended_Pictographic}\p{So}\p{Sk}\p{Mn}\u200d\ufe0f]*",
        lambda m, c: " ",
    ),
    ("symbol", r"--|[&@=≈±×÷≤≥≠§¶°%™®©|\\*^`~_\[\]{}<>•·→←/#+]", _symbol),
]


class EnglishNormalizer(RuleNormalizer):
    """Rewrite written English into speakable words, span by span."""

    def __init__(self, british: bool = False) -> None:
        super().__init__(_RULES, british)


def normalize_english(text: str, british: bool = False) -> str:
    """The spoken form of ``text`` as one string (for tests and the CLI)."""
    return EnglishNormalizer(british).text(text)
