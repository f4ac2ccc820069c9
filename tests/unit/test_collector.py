"""The collector tuning `serve` applies before it starts serving (collector.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from chatrelay import collector
from chatrelay.config import load_settings


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_tune_raises_the_young_threshold_and_keeps_the_older_ratios(restored_gc: None) -> None:
    gc.set_threshold(700, 10, 10)
    collector.tune(50_000)
    assert gc.get_threshold() == (50_000, 10, 10)


def test_tune_freezes_the_start_up_heap(restored_gc: None) -> None:
    gc.unfreeze()
    collector.tune(50_000)
    assert gc.get_freeze_count() > 1000  # at least the modules imported so far


def test_zero_keeps_cpythons_threshold(restored_gc: None) -> None:
    gc.set_threshold(700, 10, 10)
    collector.tune(0)
    assert gc.get_threshold() == (700, 10, 10)


def test_the_setting_defaults_to_50000_and_reads_the_environment() -> None:
    assert load_settings({}).gc_threshold == 50_000
    assert load_settings({"CHATRELAY_GC_THRESHOLD": "0"}).gc_threshold == 0
    assert load_settings({"CHATRELAY_GC_THRESHOLD": "120000"}).gc_threshold == 120_000


def test_a_bad_value_is_a_clear_config_error() -> None:
    from chatrelay.errors import ConfigError

    with pytest.raises(ConfigError, match="CHATRELAY_GC_THRESHOLD"):
        load_settings({"CHATRELAY_GC_THRESHOLD": "lots"})
    with pytest.raises(ConfigError, match="CHATRELAY_GC_THRESHOLD"):
        load_settings({"CHATRELAY_GC_THRESHOLD": "-5"})
