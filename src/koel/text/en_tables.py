"""Word lists for English normalisation: abbreviations, units, currencies, months, names."""

from __future__ import annotations


def _split(words: str) -> list[str]:
    return words.split()


MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
MONTH_ABBR: dict[str, int] = {m[:3].lower(): i + 1 for i, m in enumerate(MONTHS)}
MONTH_ABBR["sept"] = 9
MONTH_NUMBER: dict[str, int] = {**MONTH_ABBR, **{m.lower(): i + 1 for i, m in enumerate(MONTHS)}}

# Abbreviations that always expand the same way (the trailing period is part of the match).
ABBREVIATIONS: dict[str, str] = {
    "Mr": "Mister",
    "Mrs": "Missus",
    "Ms": "Miz",
    "Mx": "Mix",
    "Prof": "Professor",
    "Mt": "Mount",
    "Ft": "Fort",
    "Jr": "Junior",
    "Sr": "Senior",
    "Capt": "Captain",
    "Col": "Colonel",
    "Gen": "General",
    "Gov": "Governor",
    "Lt": "Lieutenant",
    "Sgt": "Sergeant",
    "Cmdr": "Commander",
    "Adm": "Admiral",
    "Rev": "Reverend",
    "Hon": "Honorable",
    "Pres": "President",
    "Sen": "Senator",
    "Rep": "Representative",
    "Supt": "Superintendent",
    "Ave": "Avenue",
    "Blvd": "Boulevard",
    "Rd": "Road",
    "Ln": "Lane",
    "Hwy": "Highway",
    "Pkwy": "Parkway",
    "Sq": "Square",
    "Apt": "Apartment",
    "Dept": "Department",
    "Univ": "University",
    "Inc": "Incorporated",
    "Ltd": "Limited",
    "Corp": "Corporation",
    "Bros": "Brothers",
    "Assn": "Association",
    "Intl": "International",
    "Natl": "National",
    "Govt": "Government",
    "Est": "Established",
    "est": "estimated",
    "etc": "et cetera",
    "vs": "versus",
    "approx": "approximately",
    "misc": "miscellaneous",
    "Vol": "Volume",
    "vol": "volume",
    "Vols": "Volumes",
    "Fig": "Figure",
    "fig": "figure",
    "Figs": "Figures",
    "Ch": "Chapter",
    "ch": "chapter",
    "Sec": "Section",
    "Eq": "Equation",
    "pp": "pages",
    "p": "page",
    "min": "minutes",
    "max": "maximum",
    "dept": "department",
    "govt": "government",
    "ref": "reference",
    "Ref": "Reference",
    "Op": "Opus",
    "cf": "compare",
    "viz": "namely",
    "ibid": "ibidem",
    "Mon": "Monday",
    "Tue": "Tuesday",
    "Tues": "Tuesday",
    "Wed": "Wednesday",
    "Thu": "Thursday",
    "Thur": "Thursday",
    "Thurs": "Thursday",
    "Fri": "Friday",
}
# Dotted forms matched as a whole (case-insensitive).
DOTTED_ABBREVIATIONS: dict[str, str] = {
    "e.g.": "for example",
    "i.e.": "that is",
    "a.k.a.": "also known as",
    "et al.": "et al",
    "n.b.": "note",
    "p.s.": "P S",
    "r.i.p.": "rest in peace",
    "a.s.a.p.": "as soon as possible",
}

# Units after a number: symbol -> (singular, plural). Matched case-sensitively, longest first.
UNITS: dict[str, tuple[str, str]] = {
    "km/h": ("kilometer per hour", "kilometers per hour"),
    "kmh": ("kilometer per hour", "kilometers per hour"),
    "kph": ("kilometer per hour", "kilometers per hour"),
    "mph": ("mile per hour", "miles per hour"),
    "m/s": ("meter per second", "meters per second"),
    "m/s²": ("meter per second squared", "meters per second squared"),
    "ft/s": ("foot per second", "feet per second"),
    "km²": ("square kilometer", "square kilometers"),
    "m²": ("square meter", "square meters"),
    "m³": ("cubic meter", "cubic meters"),
    "cm³": ("cubic centimeter", "cubic centimeters"),
    "sq ft": ("square foot", "square feet"),
    "sq mi": ("square mile", "square miles"),
    "mpg": ("mile per gallon", "miles per gallon"),
    "km": ("kilometer", "kilometers"),
    "cm": ("centimeter", "centimeters"),
    "mm": ("millimeter", "millimeters"),
    "µm": ("micrometer", "micrometers"),
    "μm": ("micrometer", "micrometers"),
    "nm": ("nanometer", "nanometers"),
    "m": ("meter", "meters"),
    "mi": ("mile", "miles"),
    "ft": ("foot", "feet"),
    "yd": ("yard", "yards"),
    "yds": ("yard", "yards"),
    "kg": ("kilogram", "kilograms"),
    "mg": ("milligram", "milligrams"),
    "µg": ("microgram", "micrograms"),
    "μg": ("microgram", "micrograms"),
    "g": ("gram", "grams"),
    "lb": ("pound", "pounds"),
    "lbs": ("pound", "pounds"),
    "oz": ("ounce", "ounces"),
    "st": ("stone", "stone"),
    "ml": ("milliliter", "milliliters"),
    "mL": ("milliliter", "milliliters"),
    "cl": ("centiliter", "centiliters"),
    "dl": ("deciliter", "deciliters"),
    "l": ("liter", "liters"),
    "L": ("liter", "liters"),
    "gal": ("gallon", "gallons"),
    "qt": ("quart", "quarts"),
    "pt": ("pint", "pints"),
    "tsp": ("teaspoon", "teaspoons"),
    "tbsp": ("tablespoon", "tablespoons"),
    "°C": ("degree Celsius", "degrees Celsius"),
    "ºC": ("degree Celsius", "degrees Celsius"),
    "° C": ("degree Celsius", "degrees Celsius"),
    "℃": ("degree Celsius", "degrees Celsius"),
    "°F": ("degree Fahrenheit", "degrees Fahrenheit"),
    "ºF": ("degree Fahrenheit", "degrees Fahrenheit"),
    "° F": ("degree Fahrenheit", "degrees Fahrenheit"),
    "℉": ("degree Fahrenheit", "degrees Fahrenheit"),
    "°": ("degree", "degrees"),
    "º": ("degree", "degrees"),
    "ms": ("millisecond", "milliseconds"),
    "µs": ("microsecond", "microseconds"),
    "ns": ("nanosecond", "nanoseconds"),
    "s": ("second", "seconds"),
    "sec": ("second", "seconds"),
    "secs": ("second", "seconds"),
    "min": ("minute", "minutes"),
    "mins": ("minute", "minutes"),
    "h": ("hour", "hours"),
    "hr": ("hour", "hours"),
    "hrs": ("hour", "hours"),
    "yr": ("year", "years"),
    "yrs": ("year", "years"),
    "KB": ("kilobyte", "kilobytes"),
    "kB": ("kilobyte", "kilobytes"),
    "MB": ("megabyte", "megabytes"),
    "GB": ("gigabyte", "gigabytes"),
    "TB": ("terabyte", "terabytes"),
    "PB": ("petabyte", "petabytes"),
    "KiB": ("kibibyte", "kibibytes"),
    "MiB": ("mebibyte", "mebibytes"),
    "GiB": ("gibibyte", "gibibytes"),
    "TiB": ("tebibyte", "tebibytes"),
    "Kb": ("kilobit", "kilobits"),
    "Mb": ("megabit", "megabits"),
    "Gb": ("gigabit", "gigabits"),
    "kbps": ("kilobit per second", "kilobits per second"),
    "Mbps": ("megabit per second", "megabits per second"),
    "Gbps": ("gigabit per second", "gigabits per second"),
    "MB/s": ("megabyte per second", "megabytes per second"),
    "GB/s": ("gigabyte per second", "gigabytes per second"),
    "Hz": ("hertz", "hertz"),
    "kHz": ("kilohertz", "kilohertz"),
    "MHz": ("megahertz", "megahertz"),
    "GHz": ("gigahertz", "gigahertz"),
    "W": ("watt", "watts"),
    "kW": ("kilowatt", "kilowatts"),
    "MW": ("megawatt", "megawatts"),
    "GW": ("gigawatt", "gigawatts"),
    "kWh": ("kilowatt hour", "kilowatt hours"),
    "MWh": ("megawatt hour", "megawatt hours"),
    "V": ("volt", "volts"),
    "kV": ("kilovolt", "kilovolts"),
    "mA": ("milliamp", "milliamps"),
    "mAh": ("milliamp hour", "milliamp hours"),
    "Ah": ("amp hour", "amp hours"),
    "hp": ("horsepower", "horsepower"),
    "cal": ("calorie", "calories"),
    "kcal": ("kilocalorie", "kilocalories"),
    "Pa": ("pascal", "pascals"),
    "kPa": ("kilopascal", "kilopascals"),
    "psi": ("P S I", "P S I"),
    "dB": ("decibel", "decibels"),
    "px": ("pixel", "pixels"),
    "pts": ("point", "points"),
    "x": ("times", "times"),
}

CURRENCY_SYMBOLS: dict[str, tuple[str, str, str, str]] = {
    # symbol: (unit singular, unit plural, cent singular, cent plural)
    "$": ("dollar", "dollars", "cent", "cents"),
    "US$": ("US dollar", "US dollars", "cent", "cents"),
    "A$": ("Australian dollar", "Australian dollars", "cent", "cents"),
    "C$": ("Canadian dollar", "Canadian dollars", "cent", "cents"),
    "R$": ("real", "reais", "centavo", "centavos"),
    "€": ("euro", "euros", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "¥": ("yen", "yen", "sen", "sen"),
    "₹": ("rupee", "rupees", "paisa", "paise"),
    "₩": ("won", "won", "jeon", "jeon"),
    "₽": ("ruble", "rubles", "kopeck", "kopecks"),
    "₺": ("lira", "lira", "kurus", "kurus"),
    "₿": ("bitcoin", "bitcoin", "satoshi", "satoshis"),
    "¢": ("cent", "cents", "", ""),
}
CURRENCY_CODES: dict[str, str] = {
    "USD": "$",
    "EUR": "€",
    "GBP": "£",
    "JPY": "¥",
    "INR": "₹",
    "CAD": "C$",
    "AUD": "A$",
    "BRL": "R$",
    "KRW": "₩",
    "RUB": "₽",
    "BTC": "₿",
}
MAGNITUDES: dict[str, str] = {
    "k": "thousand",
    "K": "thousand",
    "thousand": "thousand",
    "m": "million",
    "M": "million",
    "mn": "million",
    "mil": "million",
    "million": "million",
    "b": "billion",
    "B": "billion",
    "bn": "billion",
    "billion": "billion",
    "t": "trillion",
    "T": "trillion",
    "tn": "trillion",
    "trillion": "trillion",
}

# Roman numerals after these names are regnal: "Henry VIII" -> "Henry the eighth".
REGNAL_NAMES = frozenset(
    _split(
        """Henry Edward Elizabeth George William Charles James John Richard Louis Mary Anne Victoria
        Philip Felipe Juan Carlos Alfonso Ferdinand Isabella Frederick Friedrich Wilhelm Peter Paul
        Catherine Ivan Nicholas Alexander Constantine Leo Pius Benedict Gregory Innocent Clement Urban
        Boniface Sixtus Francis Stephen Matilda Harold Alfred David Robert Malcolm Kenneth Duncan Otto
        Rudolf Leopold Joseph Maximilian Gustav Gustavus Christian Olaf Haakon Harald Magnus Eric Erik
        Sancho Pedro Manuel Afonso Sebastian Rama Ramesses Ramses Amenhotep Thutmose Darius Xerxes
        Antiochus Ptolemy Cleopatra Napoleon Umberto Vittorio Emmanuel Hirohito Akihito Mohammed
        Abdullah Hussein Fahd Faisal Salman Ludwig Maria Sigismund Casimir Wladyslaw Augustus Andrew
        Martin Adrian Julius Sergius Celestine Honorius Hadrian Nero Pepin Lothair Conrad Baldwin
        Bohemond Raymond Tancred Guy Amalric Ladislaus Bela Stefan Milan Carol Mihai Simeon Boris
        Tsar King Queen Pope Emperor Prince Princess Duke Baron Sultan Shah Kaiser Czar Pharaoh"""
    )
)
# After these words a Roman numeral is a plain number: "World War II" -> "World War two".
ROMAN_KEYWORDS = frozenset(
    _split(
        """War Chapter Part Act Scene Book Volume Vol Phase Stage Type Class Level Title Section Article
        Episode Season Round Series Division Tier Grade Appendix Annex Schedule Category Mark Mk
        Amendment Canto Psalm Track Disc Gen Generation Bowl Apollo Rocky Fantasy Quest Olympiad
        Saturn Vatican Council Wrestlemania Wars Term Figure Table Plate Unit Module Lesson"""
    )
)
ORDINAL_WORD_FIX = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth"}

LETTER_NAMES = {c: c.upper() for c in "abcdefghijklmnopqrstuvwxyz"}

# Pronounceable domain/URL words that have no vowel but are said as words.
URL_WORDS = frozenset({"www", "http", "https"})
TLD_WORDS = frozenset(
    _split(
        """com org net io ai dev edu gov co uk de fr es it jp cn in us ca au app info biz me tv ly gg
        xyz tech online site blog shop news"""
    )
)
