"""The README's promises that can drift: the metric list and the two commands."""

from pathlib import Path

from otel_agent.metrics import markdown_table

README = Path(__file__).resolve().parents[3] / "README.md"


def test_readme_lists_every_metric_exactly_as_the_table_declares_it():
    assert markdown_table() in README.read_text(), (
        "README's metric table is stale: paste the output of `python -m otel_agent.metrics`")


def test_readme_shows_the_two_commands_and_ci_runs_the_test_one():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci
