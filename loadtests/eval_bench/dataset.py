"""The bench's evaluation rows: made-up countries and capitals (services/fixtures/capitals.py) asked in
several phrasings, so every request is a distinct question (results are matched by question)."""

from __future__ import annotations

from services.fixtures.capitals import COUNTRIES, SYSTEM

PHRASINGS = (
    "What is the capital of {country}?",
    "Name the capital city of {country}.",
    "Which city is the capital of {country}?",
    "{country} has which city as its capital?",
    "Tell me the capital of {country}.",
    "What city serves as the capital of {country}?",
    "In {country}, which city is the capital?",
    "The capital of {country} is what city?",
)
MAX_ROWS = len(PHRASINGS) * len(COUNTRIES)


def evaluation_rows(count: int) -> list[dict]:
    """`count` rows in the evaluation format (`request`, `expected_response`), all questions distinct."""
    if not 1 <= count <= MAX_ROWS:
        raise ValueError(f"rows: 1-{MAX_ROWS}")
    rows = [
        {"request": f"{SYSTEM} {phrasing.format(country=country)}", "expected_response": capital}
        for phrasing in PHRASINGS
        for country, capital in COUNTRIES
    ]
    return rows[:count]
