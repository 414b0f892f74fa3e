"""Tasks: seeded, self-contained in their query text, and checkable."""

from __future__ import annotations

import random
import re
from dataclasses import replace

import pytest
from cl_plugin.graphs.tasks import (
    BEST_AGENT,
    FAMILIES,
    SERVICES,
    Task,
    check_answer,
    default_corpus,
    extract_answer,
    make_task,
    parse_problem,
    sample_tasks,
    service_fact,
)


def test_each_agent_is_the_best_on_at_least_one_family() -> None:
    assert set(BEST_AGENT) == set(FAMILIES) == {"planning", "refinement", "search", "factual"}
    assert set(BEST_AGENT.values()) == {"HRM", "TRM", "MCTS"}


def test_the_same_seed_draws_the_same_tasks() -> None:
    assert sample_tasks(30, seed=1) == sample_tasks(30, seed=1)
    assert sample_tasks(30, seed=1) != sample_tasks(30, seed=2)
    assert make_task("search", random.Random(5)) == make_task("search", random.Random(5))


def test_the_mix_sets_the_family_shares() -> None:
    tasks = sample_tasks(400, seed=3, mix={"search": 3.0, "factual": 1.0})
    share = sum(t.family == "search" for t in tasks) / len(tasks)
    assert {t.family for t in tasks} == {"search", "factual"}
    assert 0.68 < share < 0.82
    assert {t.family for t in sample_tasks(200, seed=3)} == set(FAMILIES)


@pytest.mark.parametrize(
    ("mix", "message"), [({"poetry": 1.0}, "unknown task families"), ({"search": 0.0}, "positive")]
)
def test_a_bad_mix_is_refused(mix: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sample_tasks(5, seed=0, mix=mix)


def test_an_unknown_family_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="planning, refinement, search, factual"):
        make_task("poetry", random.Random(0))


@pytest.mark.parametrize("phrasing", ["classic", "ops"])
def test_every_query_states_its_problem_in_full(phrasing: str) -> None:
    for task in sample_tasks(800, seed=4, phrasing=phrasing):
        assert parse_problem(task.query) == (task.family, task.data), task.query


def test_the_ops_register_words_the_same_problems_differently() -> None:
    classic = sample_tasks(400, seed=6)
    ops = sample_tasks(400, seed=6, phrasing="ops")
    assert {t.family for t in ops} == set(FAMILIES)
    assert not any(" / " in t.query or " dp" in t.query for t in classic)
    lists_or_dp = [" / " in t.query or " dp" in t.query for t in ops if t.family != "factual"]
    assert all(lists_or_dp)
    with pytest.raises(ValueError, match="unknown phrasing 'pirate'; use one of classic, ops"):
        sample_tasks(1, seed=0, phrasing="pirate")


def test_queries_read_like_user_questions_of_moderate_length() -> None:
    tasks = sample_tasks(800, seed=5)
    lengths = [len(t.query) for t in tasks]
    assert min(lengths) >= 30
    assert max(lengths) <= 240  # planning queries state six or seven dependencies
    assert 70 <= sum(lengths) / len(lengths) <= 130
    assert len({t.task_id for t in tasks}) == len(tasks)


def test_no_single_word_gives_a_family_away() -> None:
    tasks = sample_tasks(800, seed=6)
    words = {t.task_id: set(re.findall(r"[a-z]+", t.query.lower())) for t in tasks}
    for family in FAMILIES:
        inside = [words[t.task_id] for t in tasks if t.family == family]
        outside = set().union(*(words[t.task_id] for t in tasks if t.family != family))
        assert not (set.intersection(*inside) - outside), family
        assert len({re.sub(r"\d+", "#", t.query) for t in tasks if t.family == family}) > 20


def test_ground_truth_passes_its_own_check_and_a_wrong_answer_fails() -> None:
    for task in sample_tasks(400, seed=7):
        assert check_answer(task, f"Some reasoning first.\nAnswer: {task.answer}")
        assert not check_answer(task, "Answer: 12345")
        assert not check_answer(task, "")


def test_refinement_answers_are_checked_to_half_a_unit_of_the_last_decimal() -> None:
    task = Task("t", "refinement", "q", "6.8557", {"kind": "sqrt", "a": 47, "p": 0, "decimals": 4})
    assert check_answer(task, "Answer: 6.85565")
    assert check_answer(task, "Answer: 6.8557 (rounded)")
    assert not check_answer(task, "Answer: 6.8562")
    assert not check_answer(task, "Answer: 6.86")


def test_planning_answers_accept_any_separator_but_not_another_order() -> None:
    task = Task(
        "t", "planning", "q", "K, B, M", {"names": ["B", "K", "M"], "needs": [["B", "K"], ["M", "B"]]}
    )
    assert check_answer(task, "Answer: K -> B -> M")
    assert check_answer(task, "answer: k, b, m")
    assert not check_answer(task, "Answer: B, K, M")


def test_factual_answers_ignore_case_and_units() -> None:
    task = replace(sample_tasks(1, seed=0, mix={"factual": 1})[0], answer="30", data={"attribute": "timeout"})
    assert check_answer(task, "Answer: 30 seconds")
    team = Task("t", "factual", "q", "falcon", {"attribute": "team"})
    assert check_answer(team, "Answer: Team Falcon.")


def test_the_final_answer_line_wins_and_the_last_line_stands_in_for_it() -> None:
    assert extract_answer("Answer: 1\nmore thought\nAnswer: 2\n") == "2"
    assert extract_answer("no marker\n  42  \n") == "42"
    assert extract_answer("") == ""


def test_factual_ground_truth_is_what_the_corpus_says() -> None:
    corpus = " ".join(doc["text"] for doc in default_corpus())
    for task in sample_tasks(200, seed=8, mix={"factual": 1}):
        assert task.answer.lower() in corpus.lower()
        if task.data["entity_kind"] == "service":
            assert task.answer == service_fact(task.data["entity"], task.data["attribute"])
    assert service_fact("billing", "team") == SERVICES["billing"][0].lower()


def test_text_without_a_known_problem_is_not_parsed() -> None:
    assert parse_problem("What's the weather like in Lisbon tomorrow?") is None
    assert parse_problem("Which port does the moon listen on?") is None
