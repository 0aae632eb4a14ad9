"""systemd integration: real datagram sockets, real descriptors, the journal's prefixes."""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from distributord.shell import systemd
from distributord.shell.systemd import (
    JournalFormatter,
    LibraryFilter,
    Notifier,
    RepeatFilter,
    configure_logging,
    journal_stream_matches,
    listen_fds,
    priority,
    watchdog_interval,
)

# --- notifications ----------------------------------------------------------------------------


@pytest.fixture
def receiver(tmp_path: pathlib.Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket standing in for PID 1, and its NOTIFY_SOCKET value."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)  # a datagram is queued by the time sendto returns
        yield sock, str(path)


def received(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_notify_sends_fields_in_one_datagram_to_a_path(
    receiver: tuple[socket.socket, str],
) -> None:
    sock, address = receiver
    notifier = Notifier({"NOTIFY_SOCKET": address})
    assert notifier.enabled
    assert notifier.notify(READY=1, STATUS="4 working, 0 uncertain, 1 not working")
    assert received(sock) == "READY=1\nSTATUS=4 working, 0 uncertain, 1 not working\n"


def test_notify_sends_to_an_abstract_socket() -> None:
    name = f"distributord-test-{os.getpid()}-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.setblocking(False)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).watchdog()
        assert received(sock) == "WATCHDOG=1\n"


def test_the_module_function_reads_the_process_environment(
    receiver: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, address = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    assert systemd.notify(STOPPING=1)
    assert received(sock) == "STOPPING=1\n"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not systemd.notify(STOPPING=1)


def test_helpers_send_the_standard_fields(receiver: tuple[socket.socket, str]) -> None:
    sock, address = receiver
    notifier = Notifier({"NOTIFY_SOCKET": address})
    assert notifier.ready()
    assert received(sock) == "READY=1\n"
    assert notifier.ready("reloaded")
    assert received(sock) == "READY=1\nSTATUS=reloaded\n"
    assert notifier.status("starting")
    assert received(sock) == "STATUS=starting\n"
    assert notifier.watchdog()
    assert received(sock) == "WATCHDOG=1\n"
    assert notifier.stopping()
    assert received(sock) == "STOPPING=1\n"
    assert notifier.reloading(monotonic_usec=123_456_789)
    assert received(sock) == "RELOADING=1\nMONOTONIC_USEC=123456789\n"


def test_reloading_stamps_clock_monotonic_in_microseconds(
    receiver: tuple[socket.socket, str],
) -> None:
    sock, address = receiver
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert Notifier({"NOTIFY_SOCKET": address}).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    match = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)\n", received(sock))
    assert match is not None
    assert before <= int(match[1]) <= after


def test_a_newline_in_a_value_cannot_start_another_field(
    receiver: tuple[socket.socket, str],
) -> None:
    sock, address = receiver
    assert Notifier({"NOTIFY_SOCKET": address}).status("one\nREADY=1")
    assert received(sock) == "STATUS=one READY=1\n"


def test_booleans_are_sent_as_numbers(receiver: tuple[socket.socket, str]) -> None:
    sock, address = receiver
    assert Notifier({"NOTIFY_SOCKET": address}).notify(READY=True)
    assert received(sock) == "READY=1\n"


@pytest.mark.parametrize("name", ["ready", "STATUS TEXT", "", "X=Y"])
def test_a_bad_field_name_is_a_bug(name: str) -> None:
    with pytest.raises(ValueError, match="not a notification field name"):
        Notifier({"NOTIFY_SOCKET": "/nonexistent"}).notify(**{name: 1})


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not Notifier().enabled
    assert not Notifier().notify(READY=1)
    assert not Notifier({"NOTIFY_SOCKET": ""}).ready()


def test_a_missing_socket_is_logged_once_and_never_raises(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    with caplog.at_level(logging.DEBUG, logger="distributord.shell.systemd"):
        assert not notifier.watchdog()
        assert not notifier.watchdog()
        assert not notifier.ready()
    assert len(caplog.records) == 1
    assert caplog.records[0].levelno == logging.DEBUG
    assert "cannot notify" in caplog.records[0].getMessage()


def test_a_failure_after_a_success_is_logged_again(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "notify"
    notifier = Notifier({"NOTIFY_SOCKET": str(path)})
    with caplog.at_level(logging.DEBUG, logger="distributord.shell.systemd"):
        assert not notifier.watchdog()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(path))
            assert notifier.watchdog()
        path.unlink()
        assert not notifier.watchdog()
    assert len(caplog.records) == 2


def test_a_socket_that_is_not_a_datagram_socket_is_a_failure(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "stream"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        sock.listen()
        assert not Notifier({"NOTIFY_SOCKET": str(path)}).ready()


def test_an_unsupported_address_is_a_failure() -> None:
    assert not Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).ready()
    assert not Notifier({"NOTIFY_SOCKET": "relative/path"}).ready()


def test_a_full_receiver_makes_sends_fail_instead_of_blocking(
    receiver: tuple[socket.socket, str],
) -> None:
    _, address = receiver  # never read: its queue fills up (net.unix.max_dgram_qlen)
    notifier = Notifier({"NOTIFY_SOCKET": address})
    sent = 0
    while notifier.watchdog():
        sent += 1
        assert sent < 1_000_000, "the queue never filled up"
    assert sent > 0


# --- watchdog ---------------------------------------------------------------------------------

PID = 4242


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(PID)}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(PID + 1)}, None),
        ({"WATCHDOG_USEC": "1"}, 0.0000005),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "30s"}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_PID": str(PID)}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(environ, pid=PID) == expected


def test_watchdog_interval_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 10.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval() is None


# --- socket activation --------------------------------------------------------------------------


def free_fds(count: int) -> int:
    """The first of ``count`` consecutive descriptor numbers that are not open."""
    base = 64
    while True:
        taken = []
        for fd in range(base, base + count):
            try:
                os.fstat(fd)
                taken.append(fd)
            except OSError:
                pass
        if not taken:
            return base
        base = max(taken) + 1


def listening(tmp_path: pathlib.Path, name: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(tmp_path / name))
    sock.listen()
    return sock


@pytest.fixture
def passed(tmp_path: pathlib.Path) -> Iterator[int]:
    """Two listening sockets on consecutive descriptors, inheritable, as systemd passes them."""
    start = free_fds(2)
    identities = []
    for offset, name in enumerate(["control.sock", "extra.sock"]):
        with listening(tmp_path, name) as sock:
            os.dup2(sock.fileno(), start + offset, inheritable=True)
        stat = os.fstat(start + offset)
        identities.append((start + offset, (stat.st_dev, stat.st_ino)))
    yield start
    # Close what the test did not take over, and nothing that reused the number since.
    for fd, identity in identities:
        with contextlib.suppress(OSError):
            stat = os.fstat(fd)
            if (stat.st_dev, stat.st_ino) == identity:
                os.close(fd)


def activation(count: int, names: str | None = None, pid: int = PID) -> dict[str, str]:
    environ = {"LISTEN_PID": str(pid), "LISTEN_FDS": str(count)}
    if names is not None:
        environ["LISTEN_FDNAMES"] = names
    return environ


def close_all(sockets: dict[str, list[socket.socket]]) -> None:
    for group in sockets.values():
        for sock in group:
            sock.close()


def test_passed_sockets_are_returned_by_name_close_on_exec(
    passed: int, tmp_path: pathlib.Path
) -> None:
    environ = activation(2, "control:extra")
    sockets = listen_fds(environ, pid=PID, start=passed)
    try:
        assert sorted(sockets) == ["control", "extra"]
        (control,) = sockets["control"]
        assert control.fileno() == passed
        assert sockets["extra"][0].fileno() == passed + 1
        assert not os.get_inheritable(passed)
        assert not os.get_inheritable(passed + 1)
        assert control.family == socket.AF_UNIX
        assert control.type == socket.SOCK_STREAM
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(tmp_path / "control.sock"))
            connection, _ = control.accept()
            connection.close()
    finally:
        close_all(sockets)
    assert environ == {}


def test_sockets_with_the_same_name_are_grouped(passed: int) -> None:
    sockets = listen_fds(activation(2, "control:control"), pid=PID, start=passed)
    try:
        assert [s.fileno() for s in sockets["control"]] == [passed, passed + 1]
    finally:
        close_all(sockets)


def test_unnamed_sockets_are_unknown(passed: int) -> None:
    sockets = listen_fds(activation(2), pid=PID, start=passed)
    try:
        assert [s.fileno() for s in sockets["unknown"]] == [passed, passed + 1]
    finally:
        close_all(sockets)


def test_an_empty_name_is_unknown(passed: int) -> None:
    sockets = listen_fds(activation(2, "control:"), pid=PID, start=passed)
    try:
        assert sorted(sockets) == ["control", "unknown"]
    finally:
        close_all(sockets)


def test_names_that_do_not_match_the_count_are_ignored(
    passed: int, caplog: pytest.LogCaptureFixture
) -> None:
    sockets = listen_fds(activation(2, "control"), pid=PID, start=passed)
    try:
        assert list(sockets) == ["unknown"]
        assert "treating them as unnamed" in caplog.text
    finally:
        close_all(sockets)


@pytest.mark.parametrize(
    "environ",
    [
        {},
        activation(1, "control", pid=PID + 1),
        {"LISTEN_FDS": "1", "LISTEN_FDNAMES": "control"},
        {"LISTEN_PID": str(PID)},
        activation(0),
        {"LISTEN_PID": str(PID), "LISTEN_FDS": "one"},
    ],
)
def test_not_activated_gives_no_sockets_and_clears_the_variables(
    environ: dict[str, str], passed: int
) -> None:
    environ = dict(environ)
    assert listen_fds(environ, pid=PID, start=passed) == {}
    assert environ == {}
    assert os.get_inheritable(passed)  # someone else's descriptors are left alone


def test_other_variables_are_kept(passed: int) -> None:
    environ = {**activation(1, "control"), "PATH": "/usr/bin"}
    close_all(listen_fds(environ, pid=PID, start=passed))
    assert environ == {"PATH": "/usr/bin"}


def test_a_descriptor_that_is_not_a_socket_is_left_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    read_end, write_end = os.pipe()
    try:
        assert listen_fds(activation(1, "fifo"), pid=PID, start=read_end) == {}
        assert "ignoring passed descriptor" in caplog.text
        os.fstat(read_end)  # still open
    finally:
        os.close(read_end)
        os.close(write_end)


def test_the_process_environment_is_cleared(passed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in activation(1, "control", pid=os.getpid()).items():
        monkeypatch.setenv(name, value)
    sockets = listen_fds(start=passed)
    try:
        assert [s.fileno() for s in sockets["control"]] == [passed]
    finally:
        close_all(sockets)
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        assert name not in os.environ


# --- logging -----------------------------------------------------------------------------------


def record(level: int, message: str = "hello", exc_info: bool = False) -> logging.LogRecord:
    info = sys.exc_info() if exc_info else None
    return logging.LogRecord("distributord.shell.link", level, __file__, 1, message, (), info)


@pytest.mark.parametrize(
    ("level", "prefix"),
    [
        (logging.CRITICAL, "<3>"),
        (logging.ERROR, "<3>"),
        (logging.WARNING, "<4>"),
        (logging.INFO, "<6>"),
        (logging.DEBUG, "<7>"),
    ],
)
def test_the_journal_formatter_prefixes_the_priority(level: int, prefix: str) -> None:
    assert JournalFormatter().format(record(level)) == f"{prefix}distributord.shell.link: hello"


def test_every_line_of_a_traceback_gets_the_prefix() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        text = JournalFormatter().format(record(logging.ERROR, "two\nlines", exc_info=True))
    lines = text.split("\n")
    assert len(lines) > 3
    assert all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>RuntimeError: boom"


@pytest.mark.parametrize(
    ("levelno", "expected"), [(1, 7), (15, 6), (25, 4), (35, 3), (45, 3), (60, 3)]
)
def test_custom_levels_take_the_next_standard_priority(levelno: int, expected: int) -> None:
    assert priority(levelno) == expected


@pytest.fixture
def stderr_file(tmp_path: pathlib.Path) -> Iterator[tuple[pathlib.Path, str]]:
    """A file standing in for stderr, and the JOURNAL_STREAM value that names it."""
    path = tmp_path / "stderr"
    with path.open("w") as stream:
        stat = os.fstat(stream.fileno())
        yield path, f"{stat.st_dev}:{stat.st_ino}"


def test_journal_stream_must_name_the_descriptor(stderr_file: tuple[pathlib.Path, str]) -> None:
    path, value = stderr_file
    with path.open() as stream:
        fd = stream.fileno()
        assert journal_stream_matches({"JOURNAL_STREAM": value}, fd=fd)
        device, inode = value.split(":")
        assert not journal_stream_matches({"JOURNAL_STREAM": f"{device}:{int(inode) + 1}"}, fd=fd)
        assert not journal_stream_matches({}, fd=fd)
        assert not journal_stream_matches({"JOURNAL_STREAM": "garbage"}, fd=fd)
        assert not journal_stream_matches({"JOURNAL_STREAM": "1:"}, fd=fd)
    assert not journal_stream_matches({"JOURNAL_STREAM": value}, fd=fd)  # closed now


@pytest.fixture
def target() -> Iterator[logging.Logger]:
    """A logger of its own, so that the test leaves the root logger as pytest set it up."""
    log = logging.getLogger(f"test.systemd.{uuid.uuid4().hex}")
    log.propagate = False
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def test_configure_logging_prefixes_priorities_in_the_journal(
    stderr_file: tuple[pathlib.Path, str], target: logging.Logger
) -> None:
    path, value = stderr_file
    with path.open("a") as stream:
        handler = configure_logging(
            "info", stream=stream, environ={"JOURNAL_STREAM": value}, root=target
        )
        target.debug("hidden")
        target.warning("careful\nsecond line")
        handler.flush()  # written by the handler's thread
    assert path.read_text() == f"<4>{target.name}: careful\n<4>second line\n"


def test_configure_logging_is_plain_outside_the_journal(
    stderr_file: tuple[pathlib.Path, str], target: logging.Logger
) -> None:
    path, _ = stderr_file
    with path.open("a") as stream:
        handler = configure_logging("DEBUG", stream=stream, environ={}, root=target)
        target.debug("shown")
        handler.flush()
    assert re.fullmatch(
        rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} DEBUG {re.escape(target.name)}: shown\n",
        path.read_text(),
    )


def test_configure_logging_again_replaces_only_its_own_handler(
    stderr_file: tuple[pathlib.Path, str], target: logging.Logger
) -> None:
    path, _ = stderr_file
    other = logging.NullHandler()
    target.addHandler(other)
    with path.open("a") as stream:
        first = configure_logging("info", stream=stream, environ={}, root=target)
        second = configure_logging("error", stream=stream, environ={}, root=target)
        ours = [
            h
            for h in target.handlers
            if getattr(getattr(h, "target", None), "stream", None) is stream
        ]
    assert ours == [second]
    assert other in target.handlers
    assert first is not second
    assert target.level == logging.ERROR


@pytest.mark.parametrize(
    ("name", "levelno", "passes"),
    [
        ("distributord", logging.DEBUG, True),
        ("distributord.shell.link", logging.DEBUG, True),
        ("grpc._cython.cygrpc", logging.DEBUG, False),
        ("grpc._cython.cygrpc", logging.INFO, False),
        ("grpc._cython.cygrpc", logging.WARNING, True),
        ("asyncio", logging.DEBUG, False),
        ("distributordx", logging.DEBUG, False),  # not ours: only "distributord" and below
        ("root", logging.ERROR, True),
    ],
)
def test_the_libraries_log_at_their_own_level(name: str, levelno: int, passes: bool) -> None:
    record = logging.LogRecord(name, levelno, __file__, 1, "line", None, None)
    assert LibraryFilter(logging.DEBUG, logging.WARNING).filter(record) is passes


def test_configure_logging_lets_the_more_verbose_level_reach_the_handler(
    stderr_file: tuple[pathlib.Path, str], target: logging.Logger
) -> None:
    path, _ = stderr_file
    with path.open("a") as stream:
        configure_logging("warning", libraries="debug", stream=stream, environ={}, root=target)
        assert target.level == logging.WARNING  # the libraries never log more than we do
        configure_logging("debug", libraries="warning", stream=stream, environ={}, root=target)
        assert target.level == logging.DEBUG
        handler = configure_logging("error", stream=stream, environ={}, root=target)
        assert target.level == logging.ERROR  # libraries: as level, unless told
        target.warning("hidden")  # the target is not ours: a library, at error
        handler.flush()
    assert path.read_text() == ""
    with pytest.raises(ValueError, match="got 'loud'"):
        configure_logging("info", libraries="loud", root=target)


def test_log_level_error_keeps_the_libraries_to_errors_too(
    stderr_file: tuple[pathlib.Path, str], target: logging.Logger
) -> None:
    # Found in review: with logging.libraries at its default ("warning"), --log-level error
    # still let grpc's and asyncio's warnings through.
    path, _ = stderr_file
    with path.open("a") as stream:
        handler = configure_logging(
            "error", libraries="warning", stream=stream, environ={}, root=target
        )
        target.warning("hidden")  # the target is not ours: a library
        target.error("shown")
        handler.flush()
    assert path.read_text().count("\n") == 1
    assert "shown" in path.read_text()


def test_configure_logging_refuses_an_unknown_level(target: logging.Logger) -> None:
    with pytest.raises(ValueError, match="log level must be one of debug, info, warning, error"):
        configure_logging("verbose", root=target)


def test_a_flood_of_identical_warnings_is_written_once_then_counted(
    stderr_file: tuple[pathlib.Path, str], target: logging.Logger
) -> None:
    # Issue 10, item 7: one client that did not read produced 1,329 identical lines.
    path, _ = stderr_file
    with path.open("a") as stream:
        handler = configure_logging("info", stream=stream, environ={}, root=target)
        for _ in range(100):
            target.warning("same %s", "thing")
        target.warning("another")
        target.info("info is never held back")
        target.info("info is never held back")
        handler.flush()
    lines = path.read_text().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [
        "same thing",
        "another",
        "info is never held back",
        "info is never held back",
    ]


def test_after_the_window_a_repeat_says_how_many_were_held_back() -> None:
    repeats = RepeatFilter(window_s=10.0)

    def record(at: float) -> logging.LogRecord:
        entry = logging.LogRecord("x", logging.WARNING, __file__, 1, "same %s", ("thing",), None)
        entry.created = at
        return entry

    assert repeats.filter(record(0.0))
    assert not repeats.filter(record(1.0))
    assert not repeats.filter(record(9.9))
    later = record(10.0)
    assert repeats.filter(later)
    assert later.getMessage() == "same thing (and 2 more like it in 10 s)"


def test_logging_goes_through_a_thread_so_a_stalled_stderr_cannot_block_the_caller(
    target: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 10, item 7: logging wrote to stderr from trio's thread; a stalled journald
    # blocked the loop, the watchdog included. Here stderr is a pipe nobody reads.
    monkeypatch.setattr(logging, "raiseExceptions", False)  # the writes fail once it closes
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w", buffering=1)
    handler = configure_logging("info", stream=stream, environ={}, root=target)

    def log_a_lot() -> None:
        for n in range(2000):  # far more than a pipe holds: a direct write would block
            target.info("line %d %s", n, "x" * 100)

    caller = threading.Thread(target=log_a_lot, daemon=True)
    caller.start()
    caller.join(timeout=5.0)
    blocked = caller.is_alive()
    os.close(read_end)  # unblocks whoever writes: their next write fails
    caller.join(timeout=5.0)
    handler.close()
    with contextlib.suppress(OSError):
        stream.close()
    assert not blocked, "the caller blocked on a stalled stderr"


# --- the units --------------------------------------------------------------------------------

UNITS = pathlib.Path(__file__).resolve().parent.parent.parent / "systemd"

AT_REST = 20
"""Descriptors the daemon holds at rest, whatever the fleet's size (19 measured, with 2 and
with 200 batteries: telemetry is multiplexed over the one gRPC channel). That it runs within a
small limit is ``test_metrics.test_idle_metrics_connections_leave_the_daemon_its_descriptors``."""


def unit_settings(name: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_the_service_limits_descriptors_with_room_for_what_the_daemon_holds() -> None:
    # Issue 18, finding 8: the unit set no LimitNOFILE=, so the daemon's limit was whatever the
    # system's default was.
    from distributord.core.config import ControlConfig
    from distributord.shell.metrics import MAX_CONNECTIONS

    (limit,) = unit_settings("distributord.service")["LimitNOFILE"]
    budget = AT_REST + ControlConfig().max_connections + 1 + MAX_CONNECTIONS + 1
    assert int(limit) >= 4 * budget


def test_the_units_verify_clean(tmp_path: pathlib.Path) -> None:
    """``systemd-analyze verify`` says nothing about the units.

    ``/bin/true`` stands in for ``/usr/bin/distributord`` (in ``ExecStart=`` and in the
    ``ExecReload=`` that checks the file), which only the package installs.
    """
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (.ci/deb-check installs and runs it)")
    service = (UNITS / "distributord.service").read_text()
    (tmp_path / "distributord.service").write_text(
        re.sub(r"(?m)^(ExecStart|ExecReload)=/usr/bin/distributord\b", r"\1=/bin/true", service)
    )
    shutil.copy(UNITS / "distributord.socket", tmp_path)
    units = [str(tmp_path / "distributord.socket"), str(tmp_path / "distributord.service")]
    done = subprocess.run(
        [analyze, "verify", *units], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
