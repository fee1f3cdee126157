"""English number words: cardinals, ordinals, years, decimals, digits, fractions, money."""

from __future__ import annotations

from num2words import num2words

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MAX_CARDINAL = 10**15
"""Numbers this large and beyond are read digit by digit."""

FRACTION_WORDS = {
    2: ("half", "halves"),
    3: ("third", "thirds"),
    4: ("quarter", "quarters"),
}
VULGAR_FRACTIONS: dict[str, tuple[int, int]] = {
    "½": (1, 2),
    "⅓": (1, 3),
    "⅔": (2, 3),
    "¼": (1, 4),
    "¾": (3, 4),
    "⅕": (1, 5),
    "⅖": (2, 5),
    "⅗": (3, 5),
    "⅘": (4, 5),
    "⅙": (1, 6),
    "⅚": (5, 6),
    "⅐": (1, 7),
    "⅛": (1, 8),
    "⅜": (3, 8),
    "⅝": (5, 8),
    "⅞": (7, 8),
    "⅑": (1, 9),
    "⅒": (1, 10),
}


def _clean(words: str, british: bool) -> str:
    words = words.replace(",", "")
    if not british:
        words = words.replace(" and ", " ")
    return words


def digits(s: str) -> str:
    """Read a string of digits one at a time: '042' -> 'zero four two'."""
    return " ".join(DIGITS[int(c)] for c in s if c.isdigit())


def cardinal(n: int, british: bool = False) -> str:
    """'one thousand two hundred thirty-four' (British keeps the 'and')."""
    if n < 0:
        return "minus " + cardinal(-n, british)
    if n >= MAX_CARDINAL:
        return digits(str(n))
    return _clean(num2words(n, lang="en"), british)


def ordinal(n: int, british: bool = False) -> str:
    """'twenty-first'."""
    if n >= MAX_CARDINAL:
        return digits(str(n)) + "th"
    return _clean(num2words(n, lang="en", to="ordinal"), british)


def year(n: int, british: bool = False) -> str:
    """A year as people say it: 1066 'ten sixty-six', 1900 'nineteen hundred', 2005 'two thousand five'."""
    if n < 1000 or n > 9999:
        return cardinal(n, british)
    hi, lo = divmod(n, 100)
    if n % 1000 == 0 or 2000 <= n < 2010:
        return cardinal(n, british)
    if lo == 0:
        return cardinal(hi, british) + " hundred"
    if lo < 10:
        return cardinal(hi, british) + " oh " + DIGITS[lo]
    return cardinal(hi, british) + " " + cardinal(lo, british)


def integer_words(s: str, british: bool = False) -> str:
    """A written integer (maybe with grouping commas): leading zeros are read digit by digit."""
    s = s.replace(",", "").replace("_", "")
    if len(s) > 1 and s.startswith("0"):
        return digits(s)
    return cardinal(int(s), british)


def decimal(s: str, british: bool = False) -> str:
    """'3.14' -> 'three point one four'; '.5' -> 'point five'; '1,000.5' -> 'one thousand point five'."""
    whole, _, frac = s.partition(".")
    head = integer_words(whole, british) if whole else ""
    if not frac:
        return head
    return (head + " point " if head else "point ") + digits(frac)


def number(s: str, british: bool = False) -> str:
    """Any written non-negative number: integer, grouped, or decimal."""
    return decimal(s, british) if "." in s else integer_words(s, british)


def is_one(s: str) -> bool:
    """Whether a written number means exactly one (for singular units)."""
    return s.replace(",", "") in ("1",)


def fraction(num: int, den: int, british: bool = False) -> str:
    """'one half', 'three quarters', 'five eighths', 'two hundredths'."""
    if den in FRACTION_WORDS:
        one, many = FRACTION_WORDS[den]
    else:
        one = ordinal(den, british)
        many = one + "s"
    return f"{cardinal(num, british)} {one if num == 1 else many}"


def mixed_fraction(whole: int, num: int, den: int, british: bool = False) -> str:
    """'one and a half', 'two and three quarters'."""
    if num == 1:
        frac = "a " + (FRACTION_WORDS[den][0] if den in FRACTION_WORDS else ordinal(den, british))
    else:
        frac = fraction(num, den, british)
    return f"{cardinal(whole, british)} and {frac}"


def money(amount: str, units: tuple[str, str, str, str], magnitude: str = "", british: bool = False) -> str:
    """'5.50' with ('dollar','dollars','cent','cents') -> 'five dollars and fifty cents'."""
    one, many, cent, cents = units
    amount = amount.replace(",", "")
    whole, _, frac = amount.partition(".")
    if magnitude:
        return f"{number(amount, british)} {magnitude} {many}"
    if frac and (len(frac) != 2 or not cent):
        return f"{number(amount, british)} {many}"
    w = int(whole) if whole else 0
    c = int(frac) if frac else 0
    parts = []
    if w or not c:
        parts.append(f"{cardinal(w, british)} {one if w == 1 else many}")
    if c:
        parts.append(f"{cardinal(c, british)} {cent if c == 1 else cents}")
    return " and ".join(parts)
