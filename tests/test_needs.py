"""Missing models, servers, data sets and packages: a skip naming them, a failure under CI."""

from __future__ import annotations

from pathlib import Path

import pytest

import needs


@pytest.fixture(params=["", "0", "false"])
def outside_ci(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.param:
        monkeypatch.setenv("CI", request.param)
    else:
        monkeypatch.delenv("CI", raising=False)


@pytest.fixture(params=["1", "true"])
def under_ci(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", request.param)


def test_outside_ci_a_missing_package_skips_naming_it(outside_ci: None) -> None:
    with pytest.raises(pytest.skip.Exception, match=r"sl_no_such_module.*pip install x"):
        needs.module("sl_no_such_module", "pip install x")


def test_under_ci_a_missing_package_fails(under_ci: None) -> None:
    with pytest.raises(pytest.fail.Exception, match="missing: Python module sl_no_such_module"):
        needs.module("sl_no_such_module", "pip install x")


def test_a_present_package_is_returned(under_ci: None) -> None:
    assert needs.module("json", "-").dumps([1]) == "[1]"


def test_a_missing_model_names_the_pull_command(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path, outside_ci: None) -> None:
    monkeypatch.setenv("SPECULABEL_HOME", str(tmp_path))
    with pytest.raises(pytest.skip.Exception, match="speculabel models pull smollm2-135m"):
        needs.model("smollm2-135m")
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="model smollm2-135m not installed"):
        needs.model("smollm2-135m")


def test_a_missing_data_set_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from speculabel.io.datasets import shared_data_dir

    monkeypatch.setenv("SPECULABEL_DATA", str(tmp_path / "absent"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"data set tweeteval.*absent"):
        needs.data(lambda: shared_data_dir("tweeteval-sentiment"), "tweeteval")
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="data set tweeteval"):
        needs.data(lambda: shared_data_dir("tweeteval-sentiment"), "tweeteval")
    (tmp_path / "absent" / "tweeteval-sentiment").mkdir(parents=True)
    assert needs.data(lambda: shared_data_dir("tweeteval-sentiment"), "tweeteval").is_dir()


def test_no_test_skips_on_its_own() -> None:
    """Every skip goes through tests/needs.py, so that CI turns it into a failure."""
    here = Path(__file__).parent
    words = ("pytest.skip(", "importorskip(", "skipif(", "mark.skip(")
    offenders = [f"{p.name}:{n}" for p in sorted(here.glob("*.py")) if p.name != "needs.py"
                 and p.name != Path(__file__).name
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                 if any(w in line for w in words)]
    assert offenders == []
