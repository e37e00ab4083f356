import json
import logging
import subprocess
import sys

from cdp.logs import JsonFormatter


def test_json_log_lines_carry_level_logger_message_and_exception():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("cdp.test").makeRecord(
            "cdp.test", logging.ERROR, __file__, 1, "build %s failed", ("7",), sys.exc_info()
        )
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "error" and entry["logger"] == "cdp.test"
    assert entry["message"] == "build 7 failed"
    assert "ValueError: boom" in entry["exception"] and entry["time"].endswith("+00:00")


def test_logs_are_json_lines_when_stderr_is_not_a_terminal():
    code = (
        "import logging, sys; from cdp.logs import configure_logging; configure_logging(True); "
        "logging.getLogger('cdp.x').info('hello %s', 'there')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(e["level"], e["message"]) for e in lines] == [("info", "hello there")]
