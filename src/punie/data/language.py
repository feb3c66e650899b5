"""Which natural language a text is in, by py3langid (its model ships inside the package).

Short texts carry too little signal to tell: below `MIN_CHARS` letters the answer is None, and
filters let such rows through rather than guess.
"""

from __future__ import annotations

from functools import cache

from punie.errors import DataError

MIN_CHARS = 20


@cache
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def codes() -> tuple[str, ...]:
    """The languages the model tells apart, as ISO 639-1 codes."""
    return tuple(sorted(_identifier().nb_classes))


def check_codes(wanted: tuple[str, ...]) -> None:
    """Refuse a code the model never answers: filtering on it would drop every row."""
    known = codes()
    for code in wanted:
        if code not in known:
            raise DataError(
                f"--language {code!r}: not a language code py3langid knows; use an ISO 639-1 "
                f"code such as en, de, fr or zh ({len(known)} known)"
            )


def detect(text: str) -> tuple[str, float] | None:
    """(ISO 639-1 code, probability), or None when the text is too short to tell."""
    text = text[:2000]
    if sum(c.isalpha() for c in text) < MIN_CHARS:
        return None
    lang, prob = _identifier().classify(text)
    return lang, float(prob)
