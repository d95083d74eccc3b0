"""Duplicate groups from matches: cohesive groups against union-find components."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speculabel.match.grouping import cohesive, grouped, groups
from speculabel.match.run import MatchSettings


def clique(nodes: range, w: float = 0.9) -> list[tuple[int, int, float]]:
    return [(a, b, w) for a, b in itertools.combinations(nodes, 2)]


NAMES = [f"t{i}" for i in range(12)]


def test_two_intents_joined_by_one_wrong_match_are_two_groups() -> None:
    edges = clique(range(6)) + clique(range(6, 12)) + [(5, 6, 0.95)]  # the wrong match
    assert len(set(groups(NAMES, ((a, b) for a, b, _ in edges)))) == 1  # union-find chains them
    names = grouped(NAMES, edges)
    assert names == ["t0"] * 6 + ["t6"] * 6


def test_a_chain_of_intents_joined_by_wrong_matches_is_cut_at_each() -> None:
    names = [f"t{i}" for i in range(18)]
    edges = (clique(range(6)) + clique(range(6, 12)) + clique(range(12, 18))
             + [(0, 6, 0.8), (11, 12, 0.8), (3, 15, 0.75)])
    assert grouped(names, edges) == ["t0"] * 6 + ["t6"] * 6 + ["t12"] * 6


def test_a_clean_clique_and_a_sparse_pair_stay_whole() -> None:
    edges = [*clique(range(8), 0.8), (8, 9, 0.9)]
    assert grouped(NAMES, edges) == ["t0"] * 8 + ["t8", "t8", "t10", "t11"]
    star = [(0, i, 0.75) for i in range(1, 5)]  # one ticket matched by four others
    assert grouped(NAMES[:5], star) == ["t0"] * 5


def test_components_grouping_is_union_find() -> None:
    edges = clique(range(6)) + clique(range(6, 12)) + [(5, 6, 0.95)]
    assert grouped(NAMES, edges, "components") == ["t0"] * 12
    with pytest.raises(ValueError, match="grouping"):
        grouped(NAMES, edges, "kmeans")
    with pytest.raises(ValueError, match="--grouping must be one of cohesive, components"):
        MatchSettings(grouping="kmeans").check()
    assert MatchSettings().to_json()["grouping"] == "cohesive"


def test_non_matches_between_two_groups_keep_them_apart() -> None:
    # two groups of four joined by two matches: enough to merge them, unless the pairs
    # decided not similar between them count against it
    edges = clique(range(4), 0.8) + clique(range(4, 8), 0.8) + [(3, 4, 0.9), (2, 5, 0.9)]
    names = NAMES[:8]
    assert grouped(names, edges) == ["t0"] * 8
    against = [(a, b, 1.0) for a in range(4) for b in range(4, 8) if (a, b) not in ((3, 4), (2, 5))]
    assert grouped(names, edges, non_matches=against) == ["t0"] * 4 + ["t4"] * 4
    assert grouped(names, edges, "components", against) == ["t0"] * 8


def test_groups_are_deterministic_and_named_by_their_first_member() -> None:
    edges = clique(range(6)) + clique(range(6, 12)) + [(5, 6, 0.95)]
    first = grouped(NAMES, edges)
    assert all(grouped(NAMES, edges) == first for _ in range(5))
    assert cohesive(12, edges) == cohesive(12, list(reversed(edges)))
    assert first[0] == "t0" and first[11] == first[6] == "t6"


edge_lists = st.lists(st.tuples(st.integers(0, 29), st.integers(0, 29),
                                st.floats(0.5, 1.0)), max_size=80)


@settings(max_examples=60, deadline=None)
@given(edge_lists)
def test_cohesive_groups_are_connected_pieces_of_components(edges: list) -> None:
    names = [str(i) for i in range(30)]
    comp = groups(names, ((a, b) for a, b, _ in edges))
    mine = grouped(names, edges, non_matches=[(b, a, 1 - w) for a, b, w in edges[::3]])
    members: dict[str, set[int]] = {}
    for i, g in enumerate(mine):
        members.setdefault(g, set()).add(i)
        assert comp[int(g)] == comp[i]  # inside the component of its name
    for g, nodes in members.items():  # connected through matches inside the group
        seen, todo = {int(g)}, [int(g)]
        while todo:
            x = todo.pop()
            for a, b, _ in edges:
                for u, v in ((a, b), (b, a)):
                    if u == x and v in nodes and v not in seen:
                        seen.add(v)
                        todo.append(v)
        assert seen == nodes
