"""The worked examples in the web application's and the accounts' pure helpers hold."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from proxy.catalog import overview, sessions, settings, throttle
from proxy.web import render
from proxy.web.pages import admin, archives, base, console_log

MODULES = [overview, sessions, settings, throttle, render, archives, base, admin, console_log]


@pytest.mark.parametrize("module", MODULES, ids=[m.__name__ for m in MODULES])
def test_the_examples_in_the_docstrings_hold(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0, f"{module.__name__} has no examples"
    assert result.failed == 0
