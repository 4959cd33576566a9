"""The SAMPLE travel dataset behind the travel tools: made up, generated from a fixed seed.

Seventeen US cities with restaurants, places to stay, attractions and flights between
them, generated into an in-memory DuckDB database at the first query, never at import:
the tools' metadata (what ``validate`` and ``flowengine tools`` read) costs nothing.
"""

from __future__ import annotations

import functools
import math
import random
import threading
from typing import Any

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
            km = distance_km(lat, lon, other_lat, other_lon)
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


def query(sql: str, parameters: list[Any]) -> list[dict[str, Any]]:
    """Rows of ``sql`` over the dataset, as dicts; the first call generates the data."""
    connection, lock = _database()
    with lock:
        cursor = connection.execute(sql, parameters)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> int:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlambda = phi2 - phi1, math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return int(6371 * 2 * math.asin(math.sqrt(a)) * 1.2)  # roads are not straight
