"""English dates and clock times as words: "12/05/2024" -> "December fifth, twenty twenty-four"."""

from __future__ import annotations

import regex

from koel.text import en_tables as T
from koel.text import numbers_en as N
from koel.text.rules import Ctx


def date(month: int, day: int, yr: str | None, c: Ctx) -> str | None:
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    y = ""
    if yr:
        n = int(yr)
        if len(yr) == 2:
            n += 2000 if n < 50 else 1900
        y = N.year(n, c.british)
    name = T.MONTHS[month - 1]
    if c.british:
        return f"the {N.ordinal(day, True)} of {name}" + (f" {y}" if y else "")
    return f"{name} {N.ordinal(day)}" + (f", {y}" if y else "")


def date_iso(m: regex.Match, c: Ctx) -> str | None:
    return date(int(m["mo"]), int(m["d"]), m["y"], c)


def date_numeric(m: regex.Match, c: Ctx) -> str | None:
    a, b = int(m["a"]), int(m["b"])
    day_first = c.british or m["sep"] == "." or a > 12
    if b > 12 and not (a > 12):
        day_first = False
    month, day = (b, a) if day_first else (a, b)
    return date(month, day, m["y"], c)


def date_words(m: regex.Match, c: Ctx) -> str | None:
    month = T.MONTH_NUMBER[m["mon"].lower()]
    day = int(m["day"])
    out = date(month, day, m["yr"], c)
    if out is not None and m.group(0).endswith(".") and c.at_end(m.end()):
        out += "."
    return out


def date_day_first(m: regex.Match, c: Ctx) -> str | None:
    month = T.MONTH_NUMBER[m["mon"].lower()]
    day = int(m["day"])
    if not 1 <= day <= 31:
        return None
    out = f"the {N.ordinal(day, c.british)} of {T.MONTHS[month - 1]}"
    if m["yr"]:
        out += " " + N.year(int(m["yr"]), c.british)
    return out


def ampm(s: str | None) -> str:
    return f" {s[0].upper()}M" if s else ""


def time(m: regex.Match, c: Ctx) -> str | None:
    h, mins, secs, ap = int(m["h"]), m["m"], m["s"], m["ap"]
    if ap and not 1 <= h <= 12:
        return None
    out = N.cardinal(h)
    mi = int(mins)
    if mi == 0:
        if not ap:
            out += " o'clock" if h <= 12 and not secs else " hundred"
    elif mi < 10:
        out += " oh " + N.DIGITS[mi]
    else:
        out += " " + N.cardinal(mi)
    if secs:
        out += f" and {N.cardinal(int(secs))} second" + ("" if int(secs) == 1 else "s")
    out += ampm(ap)
    if ap and m.group(0).endswith(".") and c.at_end(m.end()):
        out += "."
    return out


def clock_ampm(m: regex.Match, c: Ctx) -> str:
    out = N.cardinal(int(m["h"])) + ampm(m["ap"])
    return out + "." if m.group(0).endswith(".") and c.at_end(m.end()) else out
