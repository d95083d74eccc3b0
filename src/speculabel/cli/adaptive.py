"""``speculabel classify --adaptive``: one command that starts with the judge, learns from it,
hands more and more items to the workers as an audit certifies them, and ends with the
certified statement (:mod:`speculabel.adaptive`)."""

from __future__ import annotations

from typing import Annotated

import typer

from speculabel.cli.common import fail

AdaptiveOpt = Annotated[
    bool | None,
    typer.Option("--adaptive", help="Learn from the judge and let the workers decide as much as "
                                    "a certificate allows: on a file, a cut of the workers' "
                                    "confidence order certified for that very file (see "
                                    "--adaptive-method); ends with the certified statement "
                                    "(see --target, --delta).")]
TargetOpt = Annotated[float | None, typer.Option(
    help="--adaptive: the agreement to certify, between 0 and 1 [default: 0.85].")]
DeltaOpt = Annotated[float | None, typer.Option(
    help="--adaptive: allowed probability that the guarantee fails [default: 0.1].")]
ScopeOpt = Annotated[str | None, typer.Option(
    help="--adaptive: dataset (agreement with the judge over all items) or workers (on the items "
         "the workers decide) [default: dataset].")]
AuditOpt = Annotated[float | None, typer.Option(
    help="--adaptive: share of items that also go to the judge, whatever the workers say: the "
         "sample that certifies the threshold [default: 0.05].")]
WarmupOpt = Annotated[int | None, typer.Option(
    min=2, help="--adaptive: first items of the random order that all go to the judge (half "
                "train the workers, half start the audit) [default: 200].")]
RecertifyOpt = Annotated[int | None, typer.Option(
    min=1, help="--adaptive: items between two re-certifications [default: 500].")]
MethodOpt = Annotated[str | None, typer.Option(
    "--adaptive-method",
    help="--adaptive: rank (the whole file is known: the judge labels a random fit share, the "
         "workers rank every other item, judge labels are bought at random until a cut of that "
         "order is certified for this very file, the judge takes the rest) or stream (warm-up, "
         "random audit, re-certified looks, as items come) [default: rank for --scope dataset, "
         "stream for --scope workers].")]
FitOpt = Annotated[int | None, typer.Option(
    min=0, help="--adaptive-method rank: judge labels the learning workers are fitted on "
                "[default: 10 % of the input, 50 to 300].")]
SeedOpt = Annotated[int | None, typer.Option(
    help="--adaptive: seed of the random order and of the audit [default: 0].")]


def check_adaptive_flags(**values: float | None) -> None:
    """The shares an adaptive run takes (--target, --delta, --audit-rate), each strictly between
    0 and 1, refused naming the flag (before the settings' own checks, which name keys)."""
    for key, value in values.items():
        if value is not None and not 0 < value < 1:
            flag = "--" + key.replace("_", "-")
            raise fail(f"{flag} must be between 0 and 1, both excluded, got {value:g}")
