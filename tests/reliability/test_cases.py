"""The reliability table stays true: every test it names exists, and the table in
docs/reliability.md names every one of them (a renamed or deleted test fails here, not silently)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.reliability.cases import CASES, case_tests

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("test", sorted(case_tests()))
def test_every_listed_test_exists(test):
    path, name = test.split("::")
    source = (REPO / path).read_text()
    assert re.search(rf"^def {re.escape(name)}\(", source, flags=re.MULTILINE), f"{test} is not defined"


def test_the_documented_table_names_every_case_and_test():
    page = (REPO / "docs" / "reliability.md").read_text()
    for case, tests in CASES.items():
        assert case in page, f"docs/reliability.md's table lacks the case {case!r}"
        for test in tests:
            path, name = test.split("::")
            assert name in page, f"docs/reliability.md's table does not name {test}"
