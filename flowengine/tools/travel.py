"""Search tools over a small SAMPLE travel dataset, kept in an in-memory DuckDB database.

The data is made up (generated from a fixed seed) so TravelAgent can run offline; every
result says so in its ``source`` field. Cities are matched by name anywhere in the
text given, so a model's free-text answer or the user's request can be passed as is.
"""

from __future__ import annotations

import functools
import math
import random
import re
import threading
from typing import Any

from flowengine.tools.registry import Tool, ToolFailure

SOURCE = "flowengine SAMPLE travel data (fictional, for offline demos)"

# city, state, latitude, longitude
CITIES: tuple[tuple[str, str, float, float], ...] = (
    ("Seattle", "Washington", 47.61, -122.33),
    ("Spokane", "Washington", 47.66, -117.43),
    ("Portland", "Oregon", 45.52, -122.68),
    ("San Francisco", "California", 37.77, -122.42),
    ("Los Angeles", "California", 34.05, -118.24),
    ("San Diego", "California", 32.72, -117.16),
    ("Sacramento", "California", 38.58, -121.49),
    ("Denver", "Colorado", 39.74, -104.99),
    ("Chicago", "Illinois", 41.88, -87.63),
    ("New York", "New York", 40.71, -74.01),
    ("Buffalo", "New York", 42.89, -78.88),
    ("Boston", "Massachusetts", 42.36, -71.06),
    ("Austin", "Texas", 30.27, -97.74),
    ("Houston", "Texas", 29.76, -95.37),
    ("Dallas", "Texas", 32.78, -96.80),
    ("Miami", "Florida", 25.76, -80.19),
    ("Orlando", "Florida", 28.54, -81.38),
)
_CUISINES = ("Italian", "Mexican", "Chinese", "Indian", "French", "American", "Thai", "Japanese")
_FOOD_WORDS = ("Garden", "Corner", "House", "Kitchen", "Table", "Bistro", "Grill", "Cafe")
_STAY_WORDS = ("Inn", "Hotel", "Suites", "Lodge", "Loft", "Guesthouse")
_SIGHT_WORDS = ("Museum", "Park", "Gardens", "Pier", "Observatory", "Market", "Gallery")
_DATES = tuple(f"2026-12-{day:02d}" for day in range(1, 15))


@functools.cache
def _database() -> tuple[Any, threading.Lock]:
    """The dataset, generated once per process into an in-memory DuckDB database."""
    import duckdb

    rng = random.Random(20240311)
    connection = duckdb.connect(":memory:")
    connection.execute("CREATE TABLE cities (city VARCHAR, state VARCHAR, lat DOUBLE, lon DOUBLE)")
    connection.executemany("INSERT INTO cities VALUES (?, ?, ?, ?)", list(CITIES))
    restaurants, stays, sights, flights = [], [], [], []
    for city, _, lat, lon in CITIES:
        for index in range(6):
            name = f"{city} {rng.choice(_FOOD_WORDS)} {index + 1}"
            restaurants.append(
                (
                    name,
                    city,
                    rng.choice(_CUISINES),
                    rng.randint(12, 80),
                    round(rng.uniform(3, 5), 1),
                )
            )
        for index in range(4):
            name = f"{city} {rng.choice(_STAY_WORDS)} {index + 1}"
            stays.append((name, city, rng.randint(70, 350), rng.randint(1, 4), rng.randint(1, 3)))
        for index in range(4):
            sights.append((f"{city} {rng.choice(_SIGHT_WORDS)} {index + 1}", city))
        for other, _, other_lat, other_lon in CITIES:
            if other == city:
                continue
            km = _distance_km(lat, lon, other_lat, other_lon)
            for date in _DATES:
                if rng.random() < 0.5:
                    hour = rng.randint(6, 20)
                    minutes = max(45, int(km / 12) + 30)
                    flights.append(
                        (
                            f"F{rng.randint(0, 9_999_999):07d}",
                            city,
                            other,
                            date,
                            f"{hour:02d}:{rng.choice((0, 15, 30, 45)):02d}",
                            minutes,
                            int(60 + km * rng.uniform(0.08, 0.16)),
                        )
                    )
    connection.execute(
        "CREATE TABLE restaurants (name VARCHAR, city VARCHAR, cuisine VARCHAR, "
        "average_cost INTEGER, rating DOUBLE)"
    )
    connection.executemany("INSERT INTO restaurants VALUES (?, ?, ?, ?, ?)", restaurants)
    connection.execute(
        "CREATE TABLE accommodations (name VARCHAR, city VARCHAR, price_per_night INTEGER, "
        "minimum_nights INTEGER, max_occupancy INTEGER)"
    )
    connection.executemany("INSERT INTO accommodations VALUES (?, ?, ?, ?, ?)", stays)
    connection.execute("CREATE TABLE attractions (name VARCHAR, city VARCHAR)")
    connection.executemany("INSERT INTO attractions VALUES (?, ?)", sights)
    connection.execute(
        "CREATE TABLE flights (flight_number VARCHAR, origin VARCHAR, destination VARCHAR, "
        "date VARCHAR, departure VARCHAR, minutes INTEGER, price INTEGER)"
    )
    connection.executemany("INSERT INTO flights VALUES (?, ?, ?, ?, ?, ?, ?)", flights)
    return connection, threading.Lock()


def _query(sql: str, parameters: list[Any]) -> list[dict[str, Any]]:
    connection, lock = _database()
    with lock:
        cursor = connection.execute(sql, parameters)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> int:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlambda = phi2 - phi1, math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return int(6371 * 2 * math.asin(math.sqrt(a)) * 1.2)  # roads are not straight


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
    rows = _query(
        "SELECT flight_number, date, departure, minutes, price FROM flights "
        "WHERE origin = ? AND destination = ? AND (? = '' OR date = ?) "
        "ORDER BY price, date LIMIT 5",
        [start, end, date, date],
    )
    return {"origin": start, "destination": end, "flights": rows, "source": SOURCE}


def search_distance(origin: str, destination: str, mode: str = "self-driving") -> dict[str, Any]:
    """Distance, duration and cost by taxi or self-driving."""
    start, end = _city(origin, "origin"), _city(destination, "destination")
    rows = _query(
        "SELECT a.lat AS lat1, a.lon AS lon1, b.lat AS lat2, b.lon AS lon2 "
        "FROM cities a, cities b WHERE a.city = ? AND b.city = ?",
        [start, end],
    )
    km = _distance_km(*rows[0].values()) if rows else 0
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
    rows = _query(f"SELECT * EXCLUDE (city) FROM {table} WHERE city = ? ORDER BY {order}", [city])
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

TOOLS = [
    Tool(
        "plan_trip", "Departure, destination and length of a trip.", _object(query=_TEXT), plan_trip
    ),
    Tool(
        "search_flights",
        "Flights between two cities (numbers like F0123456), cheapest first.",
        _object(origin=_TEXT, destination=_TEXT, date={"type": "string", "default": ""}),
        search_flights,
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
    ),
    Tool("search_restaurants", "Restaurants in a city.", _object(city=_TEXT), search_restaurants),
    Tool(
        "search_accommodations",
        "Places to stay in a city, cheapest first.",
        _object(city=_TEXT),
        search_accommodations,
    ),
    Tool("search_attractions", "Attractions in a city.", _object(city=_TEXT), search_attractions),
]
