import io

from cdp.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_silent_when_output_is_not_a_terminal():
    stream = io.StringIO()
    with Progress("load", total=10, stream=stream) as bar:
        for done in range(11):
            bar.update(done)
    assert stream.getvalue() == ""


def test_progress_draws_a_bar_in_place_on_a_terminal_and_ends_the_line():
    stream = _Terminal()
    with Progress("build", total=4, stream=stream) as bar:
        bar.update(4, "report")
    text = stream.getvalue()
    assert text.startswith("\rbuild ") and "100% 4/4  report" in text and text.endswith("\n")
    assert "█" * 24 in text


def test_progress_without_a_total_counts_with_a_rate():
    stream = _Terminal()
    with Progress("ingest", unit="messages", stream=stream) as bar:
        bar.update(1234)
    assert "ingest 1,234 messages (" in stream.getvalue() and "/s)" in stream.getvalue()
