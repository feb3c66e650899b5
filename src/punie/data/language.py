"""Which natural language a text is in, by py3langid (its model ships inside the package).

Short texts carry too little signal to tell: below `MIN_CHARS` letters the answer is None, and
filters let such rows through rather than guess.
"""

from __future__ import annotations

from functools import cache

MIN_CHARS = 20


@cache
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect(text: str) -> tuple[str, float] | None:
    """(ISO 639-1 code, probability), or None when the text is too short to tell."""
    text = text[:2000]
    if sum(c.isalpha() for c in text) < MIN_CHARS:
        return None
    lang, prob = _identifier().classify(text)
    return lang, float(prob)
