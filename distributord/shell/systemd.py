"""systemd integration over the standard library: sd_notify, the watchdog, socket activation, logs.

Theory of operation
-------------------
systemd talks to a service through its environment and a few file descriptors; each protocol is
a few lines, so no C extension (and no python-systemd) is needed. Every function reads the
environment through an optional ``environ`` argument (and the pid through ``pid``), so tests
drive them with a dict instead of the process's real state.

* **Notifications** (sd_notify(3)): ``KEY=VALUE`` lines in one datagram to ``$NOTIFY_SOCKET``,
  a file system path or, when it starts with ``@``, an abstract socket. Without the variable
  every call is a no-op returning ``False``, so the daemon runs the same outside systemd. A send
  never blocks (the socket is non-blocking: the event loop must not wait on PID 1) and never
  raises: a broken notify socket is logged once, at debug, and must not take the daemon down
  (systemd notices a missing ``READY=1`` or ``WATCHDOG=1`` by itself).
* **Watchdog** (sd_watchdog_enabled(3)): ``$WATCHDOG_USEC`` is the limit; we ping at half of it,
  and only when ``$WATCHDOG_PID`` is unset or names us.
* **Socket activation** (sd_listen_fds(3)): when ``$LISTEN_PID`` names us, ``$LISTEN_FDS``
  descriptors starting at 3 are ours, named by ``$LISTEN_FDNAMES`` (the unit names the control
  socket ``control``, see :data:`CONTROL_FD_NAME`). They are made close-on-exec and the three
  variables removed, so that no child inherits either.
* **Logging**: under systemd stderr goes to the journal, which reads a ``<N>`` prefix on each
  line as the line's syslog priority and adds the time itself. We trust ``$JOURNAL_STREAM`` only
  when it names the device and inode of our actual stderr (as systemd documents), because the
  variable is inherited by children whose stderr went elsewhere. Our loggers
  (``distributord.*``) log at ``logging.level``, everyone else's (grpc's, asyncio's) at
  ``logging.libraries`` but never more verbosely than ours (:class:`LibraryFilter`): at
  ``debug``, grpc alone writes lines for
  every call that bury ours. grpc's C core writes to stderr by itself, under its own
  ``GRPC_VERBOSITY`` (``distributord`` sets ``ERROR`` unless the operator set it) and
  ``GRPC_TRACE``: the operator's to set.

The call sites decide *when* (``READY=1`` after every task has started, ``WATCHDOG=1`` only while
the request loop is alive); this module only knows *how*.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import queue
import socket
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import TextIO

logger = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3
"""The first passed descriptor: 0, 1 and 2 are stdin, stdout and stderr (sd_listen_fds(3))."""

CONTROL_FD_NAME = "control"
"""``FileDescriptorName=`` of the control socket in ``systemd/distributord.socket``."""

UNKNOWN_FD_NAME = "unknown"
"""The name systemd gives a descriptor whose socket unit names none (sd_listen_fds(3))."""

_LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")

PRIORITIES = {
    logging.CRITICAL: 3,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
"""Python level to syslog priority (err, warning, info, debug). CRITICAL is logged as err, not
crit: the daemon's "critical" means "it stops now", which journalctl -p err already shows."""

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
"""The operator's levels (``logging.level``, ``--log-level``)."""

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""Outside the journal: a terminal or a file needs the time, and the level spelled out."""

JOURNAL_FORMAT = "%(name)s: %(message)s"
"""In the journal: it records the time and the priority (the ``<N>`` prefix) itself."""


# --- notifications ----------------------------------------------------------------------------


def _socket_address(value: str) -> str | bytes | None:
    if value.startswith("@"):
        return b"\0" + os.fsencode(value[1:])  # Linux abstract namespace
    if value.startswith("/"):
        return value
    return None  # vsock:... (systemd 253+) and anything else: not supported


def _line(key: str, value: str | int) -> str:
    if not key or not all(c.isupper() or c.isdigit() or c == "_" for c in key):
        raise ValueError(f"not a notification field name: {key!r}")
    text = str(int(value)) if isinstance(value, int) else value
    # One field per line: a newline in a STATUS= text would start a bogus field.
    text = text.replace("\n", " ")
    return f"{key}={text}"


class Notifier:
    """Sends sd_notify messages to the service manager.

    Args:
        environ: Where ``NOTIFY_SOCKET`` is read, at each send (default: ``os.environ``).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._failure_logged = False

    @property
    def enabled(self) -> bool:
        """Whether a service manager is listening (``$NOTIFY_SOCKET`` is set)."""
        return bool(self._environ.get("NOTIFY_SOCKET"))

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=VALUE`` fields in one datagram (``notify(READY=1, STATUS="...")``).

        Integers (and booleans) are sent as numbers; newlines in values become spaces.

        Returns:
            Whether the message was sent: ``False`` without ``$NOTIFY_SOCKET`` or when sending
            failed (logged once, at debug, until a send succeeds again).

        Raises:
            ValueError: A field name is not upper case letters, digits and ``_`` (a bug).
        """
        payload = "\n".join(_line(key, value) for key, value in fields.items()) + "\n"
        target = self._environ.get("NOTIFY_SOCKET")
        if not target:
            return False
        address = _socket_address(target)
        if address is None:
            self._failed("unsupported NOTIFY_SOCKET address %r", target)
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(payload.encode(), address)
        except OSError as error:
            self._failed("cannot notify the service manager at %r: %s", target, error)
            return False
        self._failure_logged = False
        return True

    def _failed(self, message: str, *args: object) -> None:
        if not self._failure_logged:
            self._failure_logged = True
            logger.debug(message, *args)

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: startup finished, or a reload did (with a ``STATUS=`` line if given)."""
        if status is None:
            return self.notify(READY=1)
        return self.notify(READY=1, STATUS=status)

    def status(self, text: str) -> bool:
        """``STATUS=``: one line for ``systemctl status``."""
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: still alive (send at :func:`watchdog_interval`)."""
        return self.notify(WATCHDOG=1)

    def stopping(self) -> bool:
        """``STOPPING=1``: shutting down."""
        return self.notify(STOPPING=1)

    def reloading(self, *, monotonic_usec: int | None = None) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC=`` (now on CLOCK_MONOTONIC unless given).

        systemd uses the timestamp to tell this reload from an older one; follow with
        :meth:`ready` once the new configuration is applied.
        """
        if monotonic_usec is None:
            monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(RELOADING=1, MONOTONIC_USEC=monotonic_usec)


_default_notifier = Notifier()


def notify(**fields: str | int) -> bool:
    """Send fields to ``$NOTIFY_SOCKET`` (see :meth:`Notifier.notify`); ``False`` if not sent."""
    return _default_notifier.notify(**fields)


# --- watchdog ----------------------------------------------------------------------------------


def watchdog_interval(
    environ: Mapping[str, str] | None = None, *, pid: int | None = None
) -> float | None:
    """How often to send ``WATCHDOG=1``, in seconds: half of ``$WATCHDOG_USEC``.

    Args:
        environ: The environment (default: ``os.environ``).
        pid: Our pid (default: ``os.getpid()``).

    Returns:
        ``None`` when the watchdog is off: ``$WATCHDOG_USEC`` unset or not a positive integer,
        or ``$WATCHDOG_PID`` set to another process.
    """
    environ = os.environ if environ is None else environ
    usec = environ.get("WATCHDOG_USEC")
    if usec is None:
        return None
    watchdog_pid = environ.get("WATCHDOG_PID")
    if watchdog_pid is not None and watchdog_pid != str(os.getpid() if pid is None else pid):
        return None
    if not (usec.isascii() and usec.isdigit() and int(usec) > 0):
        logger.warning("ignoring WATCHDOG_USEC=%r: not a positive integer", usec)
        return None
    return int(usec) / 2 / 1_000_000


# --- socket activation -------------------------------------------------------------------------


def listen_fds(
    environ: MutableMapping[str, str] | None = None,
    *,
    pid: int | None = None,
    start: int = SD_LISTEN_FDS_START,
) -> dict[str, list[socket.socket]]:
    """The sockets systemd passed us, by ``FileDescriptorName=``.

    Removes ``LISTEN_PID``, ``LISTEN_FDS`` and ``LISTEN_FDNAMES`` from ``environ`` in any
    case, so that no child takes our sockets for its own.

    Args:
        environ: The environment (default: ``os.environ``, where removing also unsets).
        pid: Our pid (default: ``os.getpid()``).
        start: The first descriptor; systemd always uses 3, tests pass their own.

    Returns:
        Name to sockets (close-on-exec, in descriptor order); empty when not socket-activated
        or when the variables are for another process. An unnamed socket is ``"unknown"``.
        A passed descriptor that is not a socket (``ListenFIFO=``) is logged and left alone.
    """
    environ = os.environ if environ is None else environ
    values = {name: environ.pop(name, None) for name in _LISTEN_VARIABLES}
    listen_pid, count_text, names_text = (values[name] for name in _LISTEN_VARIABLES)
    if listen_pid is None or count_text is None:
        return {}
    if listen_pid != str(os.getpid() if pid is None else pid):
        logger.debug("LISTEN_PID=%s is not us: the sockets are not ours", listen_pid)
        return {}
    if not (count_text.isascii() and count_text.isdigit()):
        logger.warning("ignoring LISTEN_FDS=%r: not a count", count_text)
        return {}
    count = int(count_text)
    names = names_text.split(":") if names_text else []
    if names_text is not None and len(names) != count:
        logger.warning(
            "LISTEN_FDNAMES=%r names %d descriptors, LISTEN_FDS=%d; treating them as unnamed",
            names_text,
            len(names),
            count,
        )
        names = []
    sockets: dict[str, list[socket.socket]] = {}
    for index, fd in enumerate(range(start, start + count)):
        name = (names[index] if names else "") or UNKNOWN_FD_NAME
        try:
            os.set_inheritable(fd, False)
            sock = socket.socket(fileno=fd)
        except OSError as error:  # ENOTSOCK (ListenFIFO=...), EBADF: not a socket of ours
            logger.warning("ignoring passed descriptor %d (%s): %s", fd, name, error)
            continue
        sockets.setdefault(name, []).append(sock)
    return sockets


# --- logging -----------------------------------------------------------------------------------


def journal_stream_matches(environ: Mapping[str, str] | None = None, *, fd: int = 2) -> bool:
    """Whether ``fd`` (stderr) is the journal stream systemd connected (``$JOURNAL_STREAM``)."""
    environ = os.environ if environ is None else environ
    value = environ.get("JOURNAL_STREAM")
    if not value:
        return False
    device, colon, inode = value.partition(":")
    if not (colon and device.isdigit() and inode.isdigit()):
        return False
    try:
        stat = os.fstat(fd)
    except OSError:
        return False
    return (stat.st_dev, stat.st_ino) == (int(device), int(inode))


def fatal_line(message: str, *, environ: Mapping[str, str] | None = None, fd: int = 2) -> str:
    """``message`` as the one line that says why the daemon did not start.

    In the journal it carries priority 3 (err), so ``journalctl -p warning`` shows it; before
    logging is configured nothing else would add it.
    """
    return (
        f"<{priority(logging.ERROR)}>{message}"
        if journal_stream_matches(environ, fd=fd)
        else message
    )


class JournalFormatter(logging.Formatter):
    """Prefixes every line of a record with its syslog priority (``<6>``), for the journal.

    Every line, not just the first: the journal splits a traceback into one entry per line, and
    an unprefixed line would be filed as info.
    """

    def __init__(self, fmt: str = JOURNAL_FORMAT) -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        """The record, formatted, each line prefixed with ``<N>``."""
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def priority(levelno: int) -> int:
    """The syslog priority of a Python level (a custom level takes the next standard one up)."""
    for level in sorted(PRIORITIES):
        if levelno <= level:
            return PRIORITIES[level]
    return PRIORITIES[logging.CRITICAL]


REPEAT_WINDOW_S = 10.0
"""An identical warning or error logged again within this long is counted, not written."""

REPEAT_KEYS = 1024
"""Distinct messages remembered at most; the oldest are forgotten first."""


class RepeatFilter(logging.Filter):
    """Passes a warning or error once per :data:`REPEAT_WINDOW_S`; counts the repeats.

    The next one let through after the window says how many were held back. Debug and info
    lines pass untouched: they are not where floods come from (a client that does not read
    produced 1,329 identical warnings in a millisecond).
    """

    def __init__(self, window_s: float = REPEAT_WINDOW_S) -> None:
        super().__init__()
        self.window_s = window_s
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # key: [first seen, held]

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether to write ``record`` (it is rewritten to count the repeats it ends)."""
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, record.getMessage())
        seen = self._seen.get(key)
        if seen is not None and record.created - seen[0] < self.window_s:
            seen[1] += 1
            return False
        if seen is not None and seen[1]:
            record.msg = f"{key[2]} (and {seen[1]:g} more like it in {self.window_s:g} s)"
            record.args = None
        self._seen.pop(key, None)
        self._seen[key] = [record.created, 0]
        while len(self._seen) > REPEAT_KEYS:
            del self._seen[next(iter(self._seen))]
        return True


OWN_LOGGER = "distributord"
"""Our loggers are this one and those below it; every other logger is a library's."""


class LibraryFilter(logging.Filter):
    """Passes our records at ``level`` and up, the libraries' at ``libraries`` and up.

    Args:
        level: The least severe of our records that passes (a ``logging`` level).
        libraries: The same for the records of every other logger.
    """

    def __init__(self, level: int, libraries: int) -> None:
        super().__init__()
        self.level = level
        self.libraries = libraries

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is at or above the level of whose it is."""
        name = record.name
        ours = name == OWN_LOGGER or name.startswith(OWN_LOGGER + ".")
        return record.levelno >= (self.level if ours else self.libraries)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes the records to stderr, in the writer thread of :class:`LogQueueHandler`."""


class LogQueueHandler(logging.handlers.QueueHandler):
    """The handler :func:`configure_logging` installs: records go through a queue to a thread.

    Writing to stderr can block (a stalled journald); from trio's thread that would stall the
    whole daemon, watchdog included. The record is formatted here and written by
    :attr:`listener`'s thread. :meth:`flush` waits until everything queued is written.
    """

    def __init__(self, target: logging.Handler) -> None:
        self._queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        super().__init__(self._queue)
        self.target = target
        self.listener = logging.handlers.QueueListener(self._queue, target)
        self.listener.start()

    def flush(self) -> None:
        """Write everything queued so far.

        Stopping the listener drains the queue; it is started again at once.
        """
        self.listener.stop()
        self.listener.start()

    def close(self) -> None:
        """Write everything queued and stop the thread."""
        with contextlib.suppress(AttributeError):  # stopped already: it forgot its thread
            self.listener.stop()
        super().close()


def configure_logging(
    level: str,
    *,
    libraries: str | None = None,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
    root: logging.Logger | None = None,
) -> logging.Handler:
    """Log to stderr at ``level``: with priority prefixes in the journal, plainly elsewhere.

    Calling it again (on SIGHUP) replaces the handler it installed before, and only that one:
    handlers others added (pytest's, for one) stay.

    Args:
        level: ``debug``, ``info``, ``warning`` or ``error`` (any case).
        libraries: The same for other loggers than ours (:class:`LibraryFilter`), never more
            verbose than ``level`` (``--log-level error`` keeps every logger to errors);
            ``None``: ``level``. The root logger's level is the more verbose of the two, so
            that both kinds of records reach the handler, which keeps each kind to its own.
        stream: Where to write (default: ``sys.stderr``).
        environ: The environment (default: ``os.environ``).
        root: The logger to configure (default: the root logger).

    Returns:
        The handler installed.

    Raises:
        ValueError: ``level`` or ``libraries`` is not one of the four.
    """
    levelno = _levelno(level)
    libraries_levelno = levelno if libraries is None else max(levelno, _levelno(libraries))
    stream = sys.stderr if stream is None else stream
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # io.StringIO has no descriptor: not the journal
        fd = -1
    journal = fd >= 0 and journal_stream_matches(environ, fd=fd)
    writer = _StderrHandler(stream)
    writer.setFormatter(JournalFormatter() if journal else logging.Formatter(PLAIN_FORMAT))
    handler = LogQueueHandler(writer)
    handler.addFilter(LibraryFilter(levelno, libraries_levelno))
    handler.addFilter(RepeatFilter())
    target = logging.getLogger() if root is None else root
    for old in [h for h in target.handlers if isinstance(h, LogQueueHandler)]:
        target.removeHandler(old)
        old.close()
    target.addHandler(handler)
    target.setLevel(min(levelno, libraries_levelno))
    return handler


def _levelno(level: str) -> int:
    try:
        return LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}") from None
