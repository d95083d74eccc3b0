"""``learner:minilm``: MiniLM sentence embeddings + logistic regression, fitted on labels.

Spec: ``learner:minilm`` (optionally ``learner:minilm@DIR`` to keep it in ``DIR``), or
``learner:mpnet`` for another embedder.

Why: labels are free training data.  Every item the cascade escalates comes back with the
judge's label; ``calibrate`` can fit it on a share of its calibration items (judge or gold
labels).  It embeds the item with all-MiniLM-L6-v2 (about 5 ms a text on a CPU, 1/200 of a judge
call) and fits a logistic-regression head, so it costs almost nothing per item.  It votes from
``min_per_class`` labels of every class (8 by default), or at once after an explicit :meth:`fit`.

Its regularisation ``C`` and class weighting are chosen by cross-validation on the labels it is
fitted on (``C="auto"``, ``class_weight="auto"``, the defaults; see :mod:`.select`): a 3-label
task with a few hundred labels and a 77-intent task want very different heads.  So is the weight
of a nearest-neighbour vote mixed into the head (:mod:`.mixhead`; 0 when it does not help).

Pair tasks (two fields): each text is embedded on its own and the features are
``[a + b, |a - b|, a * b]`` (symmetric in the two texts), ``pair_mode="sym"``; ``"sep"`` embeds
``"text_a [SEP] text_b"`` as one text.  For pair tasks with few labels, ``similarity:minilm``
(one feature: the cosine) needs far fewer.

Options that help it imitate its labeller (measured by ``make bench-workers``):

* ``lexicon=true``: the VADER lexicon's four scores (negative, neutral, positive, compound) are
  appended to the embedding (single-text tasks), so one head sees both signals.  Unset, it is on
  for the built-in ``sentiment`` task (when vaderSentiment is installed) and off elsewhere
  (:data:`LEXICON_TASKS`); a fitted directory keeps what it was built with.  ``make
  bench-workers`` chose it: +2 to +3 points of agreement and +2 to +4 points of certified
  coverage at 0.85 for 0.06 ms a tweet (README, "Cheap workers");
* ``gate`` (``none``, the default; ``acceptor``; ``auto``): the score a certificate thresholds.
  ``acceptor``: a small model fitted on out-of-fold answers of the fit labels estimates whether
  the head's label is right, and that estimate is the label's probability (:mod:`.gate`);
  ``none``: the head's own top probability; ``auto``: the acceptor for a task of 10 labels or
  more, ``none`` otherwise.  Opt-in: on Banking77 it adds about a point of certified coverage
  (88.1 -> 89.2 % at 0.90) for about 16 times the fit's CPU time (5 extra head fits per fit
  share);
* ``head="knn"`` (with ``k``, 15 by default): a similarity-weighted vote of the ``k`` nearest
  labelled items instead of logistic regression (:class:`.heads.CosineKNN`);
* ``temperature=true``: the logistic head's probabilities are rescaled by one temperature fitted
  on out-of-fold predictions of its fit labels (:class:`.heads.TemperedLogistic`), so that the
  confidence a certificate or a confident majority thresholds on is calibrated;
* ``finetune=true`` (``epochs``, 2 by default; not with ``lexicon``): the embedder's last two
  layers are tuned on 80 % of the fit labels and used only if they beat the frozen embedding on
  the other 20 % (:mod:`.finetune`); kept as ``encoder.npz`` (no pickle).  Pairs with
  ``pair_mode="sym"`` are tuned siamese through the pair features (:mod:`.pairtune`;
  ``objective="cosine"``: through their cosine alone, two labels), with ``"sep"`` as one joined
  text.

The embedder is the spec's name: ``learner:minilm`` (default) or ``learner:mpnet``
(all-mpnet-base-v2, extra ``embed-mpnet``; :mod:`.weights`).

Shared behaviour (abstaining, retraining, freezing, persistence): :mod:`.base`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from speculabel.backends.base import BackendError
from speculabel.backends.learner.base import LearningWorker
from speculabel.backends.lexicon import LexiconScorer
from speculabel.tasks import Task

PAIR_MODES = ("sym", "sep")
#: the pair fine-tuning's heads (:mod:`.pairtune`)
OBJECTIVES = ("sym", "cosine")
KEEP_FITS = 8  # fits kept for a second call on the same data (calibrate's chosen fit share)
HEADS = ("logistic", "knn")
#: ``auto``: the acceptor gate (:mod:`.gate`) for a task of ``MANY_LABELS`` labels or more, the
#: top probability otherwise (measured on many-label intents only)
GATE_OPTIONS = ("auto", "none", "acceptor")
#: tasks whose learner appends the lexicon's scores unless told otherwise (``lexicon`` unset)
LEXICON_TASKS = ("sentiment",)


class LearnerBackend(LearningWorker):
    """MiniLM + logistic regression (see the module docstring)."""

    KIND = "learner"
    OPTIONS = (*LearningWorker.OPTIONS, "pair_mode", "C", "class_weight", "lexicon", "head", "k",
               "temperature", "finetune", "epochs", "gate", "objective")

    def __init__(
        self,
        spec: str = "learner:minilm",
        *,
        pair_mode: str = "sym",
        C: float | str = "auto",
        class_weight: str | None = "auto",
        lexicon: bool | None = None,
        head: str = "logistic",
        k: int = 15,
        temperature: bool = False,
        finetune: bool = False,
        epochs: int = 2,
        gate: str = "none",
        objective: str = "sym",
        **kw: Any,
    ) -> None:
        if objective not in OBJECTIVES:
            raise BackendError(f"{spec}: objective must be one of {OBJECTIVES}, got {objective!r}")
        if objective != "sym" and not finetune:
            raise BackendError(f"{spec}: objective is the fine-tuning's loss; it needs "
                               "finetune=true")
        self.objective = objective
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise BackendError(f"{spec}: epochs must be a whole number >= 1, got {epochs!r}")
        self.finetune = bool(finetune)
        self.epochs = int(epochs)
        self._tuned: Any = None  # the fine-tuned encoder in use (finetune=true), else None
        self._base_embed: Any = None
        self._encoder_saved = False
        self._pending_head: Any = None
        #: the held-out check of the last fine-tuning (accuracies, whether it is used, its cost)
        self.tune_report: dict[str, Any] | None = None
        if gate not in GATE_OPTIONS:
            raise BackendError(f"{spec}: gate must be one of {GATE_OPTIONS}, got {gate!r}")
        self.gate = gate
        if head not in HEADS:
            raise BackendError(f"{spec}: head must be one of {HEADS}, got {head!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise BackendError(f"{spec}: k must be a whole number >= 1, got {k!r}")
        if head == "knn" and (lexicon or temperature):
            raise BackendError(f"{spec}: lexicon and temperature need head=\"logistic\" (a "
                               "nearest-neighbour vote compares embeddings only)")
        if finetune and lexicon:
            raise BackendError(f"{spec}: finetune and lexicon cannot be combined (the tuned "
                               "encoder's own head has no lexicon columns)")
        #: None until resolved: by the task it is bound to, a fitted directory, or a first fit
        self.lexicon: bool | None = None if lexicon is None else bool(lexicon)
        self.head = head
        self.k = int(k)
        self.temperature = bool(temperature)
        self._lexicon_scorer = LexiconScorer(spec)  # builds VADER's analyser on first use
        if pair_mode not in PAIR_MODES:
            raise BackendError(f"{spec}: pair_mode must be one of {PAIR_MODES}, got {pair_mode!r}")
        if C != "auto" and (isinstance(C, str) or not float(C) > 0):
            raise BackendError(f"{spec}: C must be a positive number or \"auto\", got {C!r}")
        if class_weight not in (None, "balanced", "auto"):
            raise BackendError(f"{spec}: class_weight must be none, \"balanced\" or \"auto\", "
                               f"got {class_weight!r}")
        self.pair_mode = pair_mode
        self.C: float | str = C if C == "auto" else float(C)
        self.class_weight = class_weight
        #: what cross-validation chose at the last fit (None until then, or when nothing is auto)
        self.choice: Any = None
        self._fits: dict[str, tuple[Any, Any]] = {}  # the last fits, by their data (fit_model)
        self.pinned: Any = None  # settings chosen once for every next fit (pin_settings)
        super().__init__(spec, **kw)

    #: what a directory written before these options existed was fitted with
    SETTING_DEFAULTS: ClassVar[dict[str, Any]] = {"lexicon": False, "head": "logistic",
                                                  "temperature": False, "finetune": False}

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "pair_mode": self.pair_mode, "lexicon": self._lexicon(),
                "head": self.head, "temperature": self.temperature, "finetune": self.finetune}

    # ------------------------------------------------------------------ fine-tuning
    def fit(self, texts: Sequence[Any], labels: Sequence[str]) -> LearningWorker:
        """As :meth:`LearningWorker.fit`; with ``finetune``, the encoder's last layers are first
        tuned on these labels and used only if they beat the frozen embedding on held-out ones
        (:func:`.finetune.tune_for`, pairs :func:`.pairtune.tune_pairs_for`; :attr:`tune_report`
        says what happened).  Labels that arrive later retrain the head on the tuned
        embeddings, never the encoder."""
        if self.finetune:
            self._tune(texts, [str(v) for v in labels])
        try:
            return super().fit(texts, labels)
        finally:
            self._pending_head = None

    def _tune(self, texts: Sequence[Any], labels: list[str]) -> None:
        """Fine-tune on one text per item, or on pairs: siamese with ``pair_mode="sym"``, the
        joined ``"a [SEP] b"`` as one text with ``"sep"``.  One text (and ``"sep"``): the tuned
        model's head is kept for the next :meth:`fit_model`."""
        from speculabel.backends.learner.finetune import TunedEmbedder, linear_head, tune_for

        rows = [self._as_row(t) for t in texts]
        widths = {len(r) for r in rows}
        if not widths <= {1, 2} or len(widths) > 1:
            raise BackendError(f"{self.spec}: finetune=true tunes on one text or a pair of "
                               f"texts per item, got {sorted(widths)} fields")
        siamese = widths == {2} and self.pair_mode == "sym"
        if self.objective == "cosine" and not (siamese and len(set(labels)) <= 2):
            raise BackendError(f"{self.spec}: objective=\"cosine\" tunes pairs of texts with two "
                               "labels (pair_mode=\"sym\"); use objective=\"sym\"")
        self._use_encoder(None)
        key = self.spec.partition(":")[2].partition("@")[0] or "minilm"
        items = [" [SEP] ".join(r) for r in rows]  # one text: itself
        if siamese:
            from speculabel.backends.learner.pairtune import tune_pairs_for

            tuned, self.tune_report = tune_pairs_for(
                rows, labels, self.features(rows), key=key, epochs=self.epochs,
                objective=self.objective, frozen_fit=self._fit_fresh)
        else:
            tuned, self.tune_report = tune_for(items, labels, self.embed(items), key=key,
                                               epochs=self.epochs, frozen_fit=self._fit_fresh)
        self._use_encoder(None if tuned is None else TunedEmbedder(tuned, self.embedder_name))
        held = self.tune_report.pop("held_out_index", []) if self.tune_report else []
        if tuned is not None and self.head == "logistic" and not siamese:
            on = ([items[i] for i in held], [labels[i] for i in held])
            self._pending_head = linear_head(tuned, on if self.temperature else None)
        # siamese pairs: the learner's own head (cross-validated, neighbour vote) is fitted on
        # the tuned features of all fit labels, not the tuned model's head on 80 % of them:
        # 0.8975 against 0.88 agreement on unseen Banking77 pairs (pairtune's docstring)

    def _use_encoder(self, tuned: Any) -> None:
        """Embed with a tuned encoder (None: the base embedder); cached vectors are dropped."""
        if self._base_embed is None:
            self._base_embed = self._embed
        self._embed = tuned if tuned is not None else self._base_embed
        self._tuned = tuned.tuned if tuned is not None else None
        self._encoder_saved = False
        self._cache = {}

    def _save(self, rewrite: bool = False) -> None:
        if self._dir is not None and self.finetune and (rewrite or not self._encoder_saved):
            from speculabel.backends.learner.finetune import ENCODER_FILE, save_encoder

            if self._tuned is not None:
                save_encoder(self._dir.path, self._tuned)  # before the vectors it made
            else:
                (self._dir.path / ENCODER_FILE).unlink(missing_ok=True)
            self._encoder_saved = True
        super()._save(rewrite)

    def _lexicon(self, task: Task | None = None) -> bool:
        """Whether the lexicon's scores are appended: as set, else decided once, by ``task`` when
        one is given (on for :data:`LEXICON_TASKS` with one field, if VADER is installed), else off
        (a fit with no task, as in the bench's plain variants)."""
        if self.lexicon is None:
            on = False
            if (task is not None and task.name in LEXICON_TASKS and len(task.fields) == 1
                    and self.head == "logistic" and not self.finetune):
                import importlib.util

                on = importlib.util.find_spec("vaderSentiment") is not None
            self.lexicon = on
        return self.lexicon

    def _bind(self, task: Task) -> None:
        self._lexicon(task)
        super()._bind(task)

    def _load(self) -> None:
        if self.lexicon is None and self._dir is not None:  # unset: what the folder was built with
            meta = self._dir.read_meta()
            if meta is not None:
                self.lexicon = bool(meta.get("lexicon", self.SETTING_DEFAULTS["lexicon"]))
        super()._load()
        if self.finetune and self._dir is not None:
            from speculabel.backends.learner.finetune import TunedEmbedder, load_encoder

            tuned = load_encoder(self._dir.path)
            if tuned is not None:
                cache = self._cache  # the tuned vectors saved with it
                self._use_encoder(TunedEmbedder(tuned, self.embedder_name))
                self._cache = cache
                self._encoder_saved = True

    def check_task(self, task: Task) -> None:
        if self._lexicon(task) and len(task.fields) != 1:
            raise BackendError(f"{self.spec}: lexicon=true scores one text; task {task.name!r} "
                               f"has fields {list(task.fields)}")
        super().check_task(task)

    def lexicon_scores(self, texts: Sequence[str]) -> np.ndarray:
        """VADER's (neg, neu, pos, compound) for each text."""
        return self._lexicon_scorer(texts)

    def features(self, rows: Sequence[Sequence[str]]) -> np.ndarray:
        """Feature matrix for rows of field values (one text, or a pair)."""
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        width = len(rows[0])
        if self._lexicon() and width != 1:
            raise BackendError(f"{self.spec}: lexicon=true scores one text; these rows have "
                               f"{width} fields")
        if width == 2 and self.pair_mode == "sym":
            a = self.embed([r[0] for r in rows])
            b = self.embed([r[1] for r in rows])
            return np.hstack([a + b, np.abs(a - b), a * b])
        if width == 1:
            x = self.embed([r[0] for r in rows])
            if self.lexicon:
                x = np.hstack([x, self.lexicon_scores([r[0] for r in rows])])
            return x
        return self.embed([" [SEP] ".join(r) for r in rows])

    def _settings_now(self) -> tuple[float, str | None]:
        """C and class weighting of the next head: fixed ones, else the last chosen, else the
        middle of the grid."""
        c = self.choice.C if self.choice is not None else 3.0
        cw = self.choice.class_weight if self.choice is not None else None
        return (c if self.C == "auto" else float(self.C),
                cw if self.class_weight == "auto" else self.class_weight)

    def new_head(self) -> Any:
        if self.head == "knn":
            from speculabel.backends.learner.heads import CosineKNN

            return CosineKNN(k=self.k)
        c, cw = self._settings_now()
        if self.temperature:
            from speculabel.backends.learner.heads import TemperedLogistic

            return TemperedLogistic(C=c, max_iter=2000, class_weight=cw)
        from speculabel.backends.learner.mixhead import MixedHead

        ch = self.choice
        return MixedHead(C=c, class_weight=cw, max_iter=2000,
                         knn_weight=getattr(ch, "knn_weight", 0.0),
                         temperature=getattr(ch, "temperature", 0.05), gate=self.gate_now())

    def gate_now(self) -> str:
        """The gate of the next mixed head: as set, or for ``auto`` the acceptor when the task
        has many labels (:data:`speculabel.tasks.task.MANY_LABELS`)."""
        from speculabel.tasks.task import MANY_LABELS

        if self.gate != "auto":
            return self.gate
        return "acceptor" if len(self.labels or ()) >= MANY_LABELS else "none"

    def _choose(self, x: np.ndarray, y: np.ndarray) -> Any:
        from speculabel.backends.learner.select import C_GRID, WEIGHTINGS, choose

        cs = C_GRID if self.C == "auto" else (float(self.C),)
        ws = WEIGHTINGS if self.class_weight == "auto" else (self.class_weight,)
        return choose(x, y, cs=cs, weightings=ws)

    def pin_settings(self, rows: Sequence[Sequence[str]] | None, labels: Sequence[str] = ()
                     ) -> None:
        """C, class weighting and the neighbour vote chosen by cross-validation on these rows,
        kept for every next fit (see :meth:`LearningWorker.pin_settings`)."""
        if rows is None or not (self.C == "auto" or self.class_weight == "auto"):
            self.pinned = None
            return
        y = np.array([str(v) for v in labels])
        self.pinned = self._choose(self.features(rows), y) if len(set(y)) >= 2 else None

    def other_heads(self) -> dict[str, Any]:
        """A plain logistic regression: the head that earlier versions saved (still loaded)."""
        from sklearn.linear_model import LogisticRegression

        return {"sklearn.linear_model._logistic.LogisticRegression":
                lambda: LogisticRegression(max_iter=2000)}

    def fit_model(self, x: np.ndarray, y: np.ndarray) -> Any:
        """Choose what is ``"auto"`` by cross-validation on (x, y), then fit on all of it (and,
        with ``temperature``, fit the temperature on out-of-fold logits of those settings).  Just
        after a fine-tuning that is used: the tuned model's own head (:func:`.finetune.linear_head`).

        The last few fits are kept by a hash of their data and settings: ``calibrate`` fits
        the chosen fit share's worker a second time (fitting is deterministic), and that costs
        nothing then."""
        if self._pending_head is not None:
            return self._pending_head
        import hashlib

        key = hashlib.sha256(repr((self.C, self.class_weight, self.pinned, self.head, self.k,
                                   self.temperature, self.gate_now(), x.shape,
                                   x.dtype.str)).encode()
                             + x.tobytes() + "\0".join(map(str, y)).encode()).hexdigest()
        if key in self._fits:
            self.choice, model = self._fits[key]
            return model
        model = self._fit_fresh(x, y)
        self._fits[key] = (self.choice, model)
        while len(self._fits) > KEEP_FITS:
            self._fits.pop(next(iter(self._fits)))
        return model

    def _fit_fresh(self, x: np.ndarray, y: np.ndarray) -> Any:
        if self.head == "knn":
            return self.new_head().fit(x, y)
        if self.pinned is not None:
            self.choice = self.pinned
        elif self.C == "auto" or self.class_weight == "auto":
            self.choice = self._choose(x, y)
        head = self.new_head()
        if self.temperature:
            from speculabel.backends.learner.heads import out_of_fold_temperature

            t = out_of_fold_temperature(head, x, y)
            head.fit(x, y)
            head.temperature_ = t
            return head
        return head.fit(x, y)


def from_spec(spec: str, **options: Any) -> LearningWorker:
    """The registry's factory (kept as a function for callers that import it)."""
    return LearnerBackend.from_spec(spec, **options)
