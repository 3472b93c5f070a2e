"""Logs never print secrets."""

from __future__ import annotations

import pytest
import structlog

from interlockd import logs


def test_secret_fields_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """Fields named like secrets are redacted in rendered log lines; ids and counts are not."""
    logs.configure("info", "json")
    try:
        structlog.get_logger("t").info(
            "event", api_key="ilk_abc", authorization="Bearer x", key_id="key_1", input_tokens=3
        )
    finally:
        structlog.reset_defaults()
    line = capsys.readouterr().err
    assert "ilk_abc" not in line
    assert "Bearer x" not in line
    assert '"key_id": "key_1"' in line
    assert '"input_tokens": 3' in line
