"""Search tools over flowengine's SAMPLE travel data (``travel_data``), for TravelAgent.

The data is made up so TravelAgent can run offline; every result says so in its
``source`` field. Cities are matched by name anywhere in the text given, so a model's
free-text answer or the user's request can be passed as is.
"""

from __future__ import annotations

import re
from typing import Any

from flowengine.errors import ToolFailure
from flowengine.tools.base import Tool
from flowengine.tools.travel_data import CITIES, SOURCE, distance_km, query


def places_in(text: str) -> list[tuple[str, str]]:
    """``(kind, name)`` for every known city or state named in ``text``, in order."""
    found: list[tuple[int, str, str]] = []
    lowered = text.lower()
    taken: list[range] = []
    names = [(city, "city") for city, *_ in CITIES] + [
        (state, "state") for state in sorted({state for _, state, *_ in CITIES})
    ]
    for name, kind in sorted(names, key=lambda item: -len(item[0])):
        for match in re.finditer(rf"\b{re.escape(name.lower())}\b", lowered):
            span = range(match.start(), match.end())
            if any(span.start < other.stop and other.start < span.stop for other in taken):
                continue
            taken.append(span)
            found.append((match.start(), kind, name))
    return [(kind, name) for _, kind, name in sorted(found)]


def _city(text: str, role: str) -> str:
    cities = [name for kind, name in places_in(text) if kind == "city"]
    if not cities:
        raise ToolFailure(f"no known city in the {role} {text!r}; known: {known_cities()}")
    return cities[-1] if role == "destination" else cities[0]


def known_cities() -> str:
    return ", ".join(city for city, *_ in CITIES)


def plan_trip(query: str) -> dict[str, Any]:
    """Departure, destination and length of a trip described in plain words."""
    places = places_in(query)
    if len(places) < 2 or places[0][0] != "city":
        raise ToolFailure(
            f"name a departure city and a destination (city or state); known cities: "
            f"{known_cities()}"
        )
    days_match = re.search(r"(\d+)[- ]day", query)
    kind, destination = places[-1]
    cities = [city for city, state, *_ in CITIES if state == destination]
    return {
        "origin": places[0][1],
        "destination": destination,
        "destination_is_state": kind == "state",
        "cities_in_destination": cities if kind == "state" else [destination],
        "days": int(days_match.group(1)) if days_match else 3,
        "source": SOURCE,
    }


def search_flights(origin: str, destination: str, date: str = "") -> dict[str, Any]:
    """Flights between two cities, cheapest first."""
    start, end = _city(origin, "origin"), _city(destination, "destination")
    rows = query(
        "SELECT flight_number, date, departure, minutes, price FROM flights "
        "WHERE origin = ? AND destination = ? AND (? = '' OR date = ?) "
        "ORDER BY price, date LIMIT 5",
        [start, end, date, date],
    )
    return {"origin": start, "destination": end, "flights": rows, "source": SOURCE}


def search_distance(origin: str, destination: str, mode: str = "self-driving") -> dict[str, Any]:
    """Distance, duration and cost by taxi or self-driving."""
    start, end = _city(origin, "origin"), _city(destination, "destination")
    rows = query(
        "SELECT a.lat AS lat1, a.lon AS lon1, b.lat AS lat2, b.lon AS lon2 "
        "FROM cities a, cities b WHERE a.city = ? AND b.city = ?",
        [start, end],
    )
    km = distance_km(*rows[0].values()) if rows else 0
    per_km = 2.5 if mode == "taxi" else 0.25
    return {
        "origin": start,
        "destination": end,
        "mode": mode,
        "distance_km": km,
        "duration_hours": round(km / 80, 1),
        "cost": int(km * per_km),
        "source": SOURCE,
    }


def _listing(table: str, city_text: str, order: str) -> dict[str, Any]:
    city = _city(city_text, "destination")
    rows = query(f"SELECT * EXCLUDE (city) FROM {table} WHERE city = ? ORDER BY {order}", [city])
    return {"city": city, table: rows, "source": SOURCE}


def search_restaurants(city: str) -> dict[str, Any]:
    return _listing("restaurants", city, "rating DESC, name")


def search_accommodations(city: str) -> dict[str, Any]:
    return _listing("accommodations", city, "price_per_night, name")


def search_attractions(city: str) -> dict[str, Any]:
    return _listing("attractions", city, "name")


def _object(**properties: dict[str, Any]) -> dict[str, Any]:
    required = [name for name, schema in properties.items() if "default" not in schema]
    return {
        "type": "object",
        "required": required,
        "additionalProperties": False,
        "properties": properties,
    }


_TEXT = {"type": "string", "minLength": 1}
_STRING: dict[str, Any] = {"type": "string"}
_INTEGER: dict[str, Any] = {"type": "integer"}
_NUMBER: dict[str, Any] = {"type": "number"}


def _result(**properties: dict[str, Any]) -> dict[str, Any]:
    """A tool result's schema: every field always there, no other (so that validate can
    say 'did you mean' of a misspelt one)."""
    return {
        "type": "object",
        "required": list(properties),
        "additionalProperties": False,
        "properties": {**properties, "source": _STRING},
    }


def _row_schema(**columns: dict[str, Any]) -> dict[str, Any]:
    schema = _result(**columns)
    del schema["properties"]["source"]
    return {"type": "array", "items": schema}


_LISTING_ROWS = {
    "restaurants": _row_schema(name=_STRING, cuisine=_STRING, average_cost=_NUMBER, rating=_NUMBER),
    "accommodations": _row_schema(
        name=_STRING, price_per_night=_NUMBER, minimum_nights=_INTEGER, max_occupancy=_INTEGER
    ),
    "attractions": _row_schema(name=_STRING),
}

TOOLS = [
    Tool(
        "plan_trip",
        "Departure, destination and length of a trip.",
        _object(query=_TEXT),
        plan_trip,
        result=_result(
            origin=_STRING,
            destination=_STRING,
            destination_is_state={"type": "boolean"},
            cities_in_destination={"type": "array", "items": _STRING},
            days=_INTEGER,
        ),
    ),
    Tool(
        "search_flights",
        "Flights between two cities (numbers like F0123456), cheapest first.",
        _object(origin=_TEXT, destination=_TEXT, date={"type": "string", "default": ""}),
        search_flights,
        result=_result(
            origin=_STRING,
            destination=_STRING,
            flights=_row_schema(
                flight_number=_STRING,
                date=_STRING,
                departure=_STRING,
                minutes=_INTEGER,
                price=_NUMBER,
            ),
        ),
    ),
    Tool(
        "search_distance",
        "Distance, duration and cost of a taxi or self-driving between two cities.",
        _object(
            origin=_TEXT,
            destination=_TEXT,
            mode={"enum": ["taxi", "self-driving"], "default": "self-driving"},
        ),
        search_distance,
        result=_result(
            origin=_STRING,
            destination=_STRING,
            mode=_STRING,
            distance_km=_NUMBER,
            duration_hours=_NUMBER,
            cost=_INTEGER,
        ),
    ),
    Tool(
        "search_restaurants",
        "Restaurants in a city.",
        _object(city=_TEXT),
        search_restaurants,
        result=_result(city=_STRING, restaurants=_LISTING_ROWS["restaurants"]),
    ),
    Tool(
        "search_accommodations",
        "Places to stay in a city, cheapest first.",
        _object(city=_TEXT),
        search_accommodations,
        result=_result(city=_STRING, accommodations=_LISTING_ROWS["accommodations"]),
    ),
    Tool(
        "search_attractions",
        "Attractions in a city.",
        _object(city=_TEXT),
        search_attractions,
        result=_result(city=_STRING, attractions=_LISTING_ROWS["attractions"]),
    ),
]
