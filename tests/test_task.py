from __future__ import annotations

from pathlib import Path

import pytest

from speculabel.tasks import BUILTIN_TASKS, SENTIMENT, SIMILAR_TICKET, TaskError, load_task


def write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "task.toml"
    p.write_text(body)
    return p


GOOD = """
name = "urgency"
instructions = "How urgent is this support ticket?"
fields = ["text"]
answer_cue = "Urgency:"
labels = [
  { name = "low", description = "can wait a week" },
  { name = "high", description = "customer blocked" },
]
[[examples]]
text = "I cannot log in and my shop is down"
label = "high"
"""


def test_builtins() -> None:
    assert set(BUILTIN_TASKS) == {"sentiment", "similar-ticket", "banking77-intent"}
    assert SENTIMENT.label_names == ["negative", "neutral", "positive"]
    assert SIMILAR_TICKET.fields == ("text_a", "text_b")
    msgs = SIMILAR_TICKET.chat_messages({"text_a": "A", "text_b": "B"})
    assert msgs[0]["role"] == "system" and msgs[-1]["content"].startswith("Ticket A: A")
    assert SENTIMENT.completion_prompt({"text": "hi"}).endswith("Message: hi\nSentiment:")


def test_custom_task_from_toml(tmp_path: Path) -> None:
    t = load_task(write(tmp_path, GOOD))
    assert t.name == "urgency" and t.label_names == ["low", "high"]
    assert t.render_input({"text": "x"}) == "Text: x"
    assert t.fingerprint() != SENTIMENT.fingerprint()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (GOOD.replace('{ name = "high", description = "customer blocked" }', '{ name = "low" }'),
         "duplicate label"),
        (GOOD.replace('  { name = "high", description = "customer blocked" },\n', ""),
         "at least two labels"),
        (GOOD.replace('label = "high"', 'label = "urgent"'), "unknown label 'urgent'"),
        (GOOD.replace('fields = ["text"]\n', ""), "missing required key 'fields'"),
        (GOOD.replace('text = "I cannot log in and my shop is down"\n', ""), "lacks field"),
        ("name = [", "not valid TOML"),
    ],
)
def test_invalid_task_files_are_refused(tmp_path: Path, body: str, message: str) -> None:
    p = write(tmp_path, body)
    with pytest.raises(TaskError, match=message) as err:
        load_task(p)
    assert str(p) in str(err.value)


def test_unknown_task_name() -> None:
    with pytest.raises(TaskError, match="not a built-in task"):
        load_task("nope")
