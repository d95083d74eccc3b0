"""The two tasks of the paper, built in: 3-class sentiment and "similar ticket" pairs."""

from __future__ import annotations

from speculabel.tasks.task import Example, Label, Task

SENTIMENT = Task(
    name="sentiment",
    labels=(
        Label("negative", "the author expresses a bad feeling, complaint or criticism"),
        Label("neutral", "a fact, question or mixed message with no clear feeling"),
        Label("positive", "the author expresses a good feeling, praise or enjoyment"),
    ),
    fields=("text",),
    instructions="Classify the sentiment of the message.",
    input_template="Message: {text}",
    answer_cue="Sentiment:",
    examples=(
        Example({"text": "I waited two hours and the food was cold. Never again."}, "negative"),
        Example({"text": "The store opens at 9am on Saturdays."}, "neutral"),
        Example({"text": "Best concert of my life, the band was amazing!"}, "positive"),
        Example({"text": "My phone died again, this battery is useless."}, "negative"),
    ),
)

SIMILAR_TICKET = Task(
    name="similar-ticket",
    labels=(
        Label("similar", "both tickets are about the same underlying issue", text="yes"),
        Label("not_similar", "the tickets are about different issues", text="no"),
    ),
    fields=("text_a", "text_b"),
    instructions=(
        "You triage customer support tickets. Decide whether two tickets are about the same "
        "issue, so that one answer would resolve both."
    ),
    input_template="Ticket A: {text_a}\nTicket B: {text_b}\nSame issue?",
    answer_cue="Answer:",
    examples=(
        Example(
            {"text_a": "My card still hasn't arrived after two weeks.",
             "text_b": "When will my new card be delivered? It's been ages."},
            "similar",
        ),
        Example(
            {"text_a": "I was charged twice for the same purchase.",
             "text_b": "How do I change my PIN?"},
            "not_similar",
        ),
        Example(
            {"text_a": "Why was my transfer declined?",
             "text_b": "My transfer didn't go through, it says declined."},
            "similar",
        ),
        Example(
            {"text_a": "My card has not arrived yet.",
             "text_b": "I want to activate the card I just received."},
            "not_similar",
        ),
    ),
)

def _intent_task() -> Task:
    from speculabel.tasks.intents import BANKING77_INTENT

    return BANKING77_INTENT


BUILTIN_TASKS: dict[str, Task] = {t.name: t for t in (SENTIMENT, SIMILAR_TICKET, _intent_task())}
