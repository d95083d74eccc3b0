"""The request body of ``POST /v1/classify``, checked by hand so that every refusal names the
field: ``{"items": [{"id": ..., "text": ...}, ...]}`` (pair tasks: ``text_a`` and ``text_b``).

A body that is not JSON is a 400; a body of the wrong shape (an unknown or missing field, a
value of the wrong type) a 422; too many items or too many bytes a 413.  An empty or blank text
is *not* refused: like the library, the service answers it with an ``input`` error record at its
place, so one bad text never fails its neighbours.
"""

from __future__ import annotations

import json
from typing import Any

from speculabel.errors import SpeculabelError
from speculabel.records import Item
from speculabel.tasks import Task


class BadRequest(SpeculabelError, ValueError):
    """A refused body: the HTTP status, the field (``items[3].text``) and why."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.status, self.field, self.message = status, field, message

    def to_json(self) -> dict[str, Any]:
        return {"error": {"field": self.field, "message": self.message}}


def parse_body(body: bytes, task: Task, max_items: int) -> list[Item]:
    """The items of a request body, in order; :class:`BadRequest` naming the first bad field."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(400, "body", f"not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadRequest(422, "body", f"must be a JSON object with an \"items\" list, got "
                                      f"{type(data).__name__}")
    unknown = sorted(set(data) - {"items"})
    if unknown:
        raise BadRequest(422, unknown[0], "unknown field; the body takes only \"items\"")
    if "items" not in data:
        raise BadRequest(422, "items", "missing: give a list of items")
    raw = data["items"]
    if not isinstance(raw, list):
        raise BadRequest(422, "items", f"must be a list, got {type(raw).__name__}")
    if len(raw) > max_items:
        raise BadRequest(413, "items", f"{len(raw)} items; at most {max_items} per request")
    return [parse_item(i, x, task) for i, x in enumerate(raw)]


def parse_item(pos: int, x: Any, task: Task) -> Item:
    where = f"items[{pos}]"
    allowed = ["id", *task.fields]
    if not isinstance(x, dict):
        raise BadRequest(422, where, f"must be an object with {', '.join(allowed)}, got "
                                     f"{type(x).__name__}")
    for key in x:
        if key not in allowed:
            raise BadRequest(422, f"{where}.{key}", f"unknown field; task {task.name!r} takes "
                                                    f"{', '.join(allowed)}")
    fields: dict[str, str] = {}
    for name in task.fields:
        if name not in x:
            raise BadRequest(422, f"{where}.{name}", f"missing; task {task.name!r} needs "
                                                     f"{', '.join(task.fields)}")
        value = x[name]
        if not isinstance(value, str):
            raise BadRequest(422, f"{where}.{name}", f"must be a string, got {type(value).__name__}")
        fields[name] = value
    ident = x.get("id", str(pos))
    if isinstance(ident, bool) or not isinstance(ident, str | int):
        raise BadRequest(422, f"{where}.id", f"must be a string or an integer, got "
                                             f"{type(ident).__name__}")
    return Item(str(ident), fields)
