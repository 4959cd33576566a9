"""A run's path over the graph: how often each step ran and each transition was taken."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence

import networkx as nx


def with_run_path(graph: nx.DiGraph, path: Sequence[str], title: str) -> nx.DiGraph:
    """A copy of ``graph`` whose nodes carry ``visits`` and edges ``traversals``."""
    drawn = graph.copy()
    drawn.graph["run"] = title
    visits = Counter(path)
    taken = Counter(itertools.pairwise(path))
    for node in drawn.nodes:
        drawn.nodes[node]["visits"] = visits.get(node, 0)
    for source, target in drawn.edges:
        drawn.edges[source, target]["traversals"] = taken.get((source, target), 0)
    return drawn
