"""Load benchmark: many clients at once, exactly-once answers, a client that never reads, a soak.

Usage: ``python -m bench.load [--clients 32] [--seconds 60] [--batteries 20]
[--api v1alpha18] [--depth 2] [--soak-minutes 0] [--slow-client [--slow-client-hz 100]
[--slow-client-reads]] [--daemon-log PATH] [--json PATH]``

``distributord sim --api VERSION`` (a uniform fleet of ``--batteries``, zero command latency)
and ``distributord run`` pinned to that version run in processes of their own, as in
``bench.daemon``; the daemon is ready when its ``NOTIFY_SOCKET`` status line says
every battery is working. This process holds the clients: ``--clients`` trio tasks, each on a
connection of its own, each sending ``set_power`` for its battery set without pause for the
window, with up to ``--depth`` requests outstanding (a new one goes out as each reply comes
back; after a busy answer, -32001, it pauses :data:`BUSY_PAUSE_S` first). When the window
ends no more are sent, and every outstanding request must be answered within :data:`DRAIN_S`.

The mix of battery sets (:func:`plan_sets`), so that every scheduling rule of
``spec/protocol.md`` is under load at once:

* **identical** (the rest, half or more): groups of about :data:`GROUP_SIZE` clients that
  send for exactly the same set; a request replaced while it waits is answered ``ignored``.
* **disjoint** (a quarter of the clients, at least one): each has a set of its own that no one
  else touches.
* **overlapping** (a quarter, at least two): each has a different set of two or more
  batteries from a small shared block, every one overlapping another; they run one after
  another, with a warning.
* one battery, the last, is kept for the slow client, in every window, so that the others'
  sets are the same with and without it.

Every client pipelines requests for its own set, so ``ignored`` ("superseded by a newer
request") is a valid answer in every class, not only the identical one; ``success`` is the
other expected outcome. Each reply is matched by id: a reply to an id not outstanding is
counted as a duplicate (it was answered before) or unknown (never sent), an id never answered
as missing. ``sent == answered`` with no duplicates, unknowns or missing is *exactly once*.
Latency is from just before the request is written to its reply being read; p50 and p99 are
given per class over all answers, and over the applied ones (``success``): an ``ignored``
answer measures how long a request waited until a newer one replaced it.

``--slow-client`` runs four windows of ``--seconds``: without, with, without, with. The slow
client connects, sends ``set_power`` for its battery at :data:`SLOW_CLIENT_HZ` and never
reads; when the daemon drops it (as it must, once its outbox is full) it connects again. The
others' p99 with it is compared with their p99 without it (the issue's target: under
:data:`TARGET_SLOW_CHANGE_PCT` % worse). ``--slow-client-reads`` is the control: the same
extra client, reading its replies, so that what not reading costs the others can be told from
what one more client's requests cost them.

``--soak-minutes M`` runs one window of M minutes and samples the daemon's resident memory
(``VmRSS`` of ``/proc/PID/status``) every :data:`RSS_EVERY_S`; the growth from the end of the
warm-up (:func:`warm_up_s`) to the end must stay under :data:`TARGET_RSS_GROWTH_PCT` %.

:func:`run` does all of it and returns a JSON-able dict; :func:`render` prints it; :func:`drive`
is the load alone, against any daemon's socket (the tests use an in-process daemon).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import math
import os
import random
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import attrs
import trio

from bench.distribution import machine
from distributord.client.trio import Client, open_client
from distributord.core.config import API_VERSIONS
from distributord.core.errors import BadReplyError, UnreachableError
from distributord.core.protocol import request_line

Kind = Literal["disjoint", "identical", "overlapping"]
KINDS: tuple[Kind, ...] = ("disjoint", "identical", "overlapping")

GROUP_SIZE = 4
"""Clients per identical set: enough that most of their requests are superseded."""

DEPTH = 2
"""Requests each client keeps outstanding: pipelining, bounded. 32 clients × 2 is the daemon's
default ``requests.queue_size`` (64), the most it promises to take without a busy answer, since
the queue counts only requests not answered yet; deeper runs (``--depth``) show busy answers."""

BUSY_PAUSE_S = 0.01
"""A client's pause after a busy answer: a retry, not a spin that keeps the daemon busy."""

DRAIN_S = 30.0
"""After the window, the time allowed for the last replies: six default request timeouts."""

SLOW_CLIENT_HZ = 100.0
"""The slow client's request rate: a controller sending setpoints every 10 ms, not a flood
(what a flood costs the others is CPU, not the slow-reader rule under test)."""

RSS_EVERY_S = 10.0
"""How often the soak samples the daemon's resident memory."""

READY_S = 120.0
"""How long the daemon may take to see every battery working."""

TARGET_SLOW_CHANGE_PCT = 10.0
TARGET_RSS_GROWTH_PCT = 5.0

EXPECTED = frozenset({"success", "ignored"})
"""Outcomes that are right under this load; anything else is reported as unexpected."""

BUSY = "error -32001"
"""The daemon's "overloaded" answer: valid under load (a full queue is an answer), but counted
apart, since this benchmark's default depth is meant to stay near the queue's bound."""

POWER_PER_BATTERY_W = (500.0, 2500.0)
"""Each request asks this much per battery, either sign: inside a default battery's 5 kW and
away from 0 W, which would release the set instead of commanding it."""


# --- the mix of battery sets (pure) -----------------------------------------------------------


@attrs.frozen(kw_only=True)
class Assignment:
    """One client's battery set and its class."""

    client: int
    kind: Kind
    batteries: tuple[int, ...]


@attrs.frozen(kw_only=True)
class Plan:
    """Every client's set, and the slow client's (kept apart, used or not)."""

    clients: tuple[Assignment, ...]
    slow: tuple[int, ...]


def _overlap_block(count: int) -> int:
    """The smallest block (at least 3) with ``count`` distinct subsets of two or more."""
    k = 3
    while 2**k - k - 1 < count:
        k += 1
    return k


def plan_sets(clients: int, batteries: Sequence[int]) -> Plan:
    """The mix described in the module docstring, deterministic for given arguments.

    Raises:
        ValueError: Fewer than 5 clients (two overlapping, two identical, one disjoint),
            or too few batteries for them.
    """
    if clients < 5:
        raise ValueError(f"the mix needs at least 5 clients, got {clients}")
    ids = sorted(batteries)
    n_overlapping = max(2, clients // 4)  # one alone would overlap no one
    n_disjoint = max(1, clients // 4)
    n_identical = clients - n_overlapping - n_disjoint
    groups = max(1, n_identical // GROUP_SIZE)
    block = _overlap_block(n_overlapping)
    needed = 1 + block + n_disjoint + groups
    if len(ids) < needed:
        raise ValueError(f"{clients} clients need at least {needed} batteries, got {len(ids)}")
    slow, rest = (ids[-1],), ids[:-1]
    shared, rest = rest[:block], rest[block:]
    # The rest in contiguous chunks, sizes differing by at most one: one per disjoint client,
    # one per identical group.
    chunks: list[tuple[int, ...]] = []
    start = 0
    for k in range(n_disjoint + groups):
        size = len(rest) // (n_disjoint + groups) + (k < len(rest) % (n_disjoint + groups))
        chunks.append(tuple(rest[start : start + size]))
        start += size
    subsets = [
        tuple(shared[i] for i in combination)
        for size in range(2, block + 1)
        for combination in itertools.combinations(range(block), size)
    ]
    assignments: list[Assignment] = []
    client = itertools.count()
    for k in range(n_disjoint):
        assignments.append(Assignment(client=next(client), kind="disjoint", batteries=chunks[k]))
    for k in range(n_identical):
        group = chunks[n_disjoint + k % groups]
        assignments.append(Assignment(client=next(client), kind="identical", batteries=group))
    for k in range(n_overlapping):
        assignments.append(
            Assignment(client=next(client), kind="overlapping", batteries=subsets[k])
        )
    return Plan(clients=tuple(assignments), slow=slow)


# --- figures (pure) ---------------------------------------------------------------------------

HISTOGRAM_RATIO = 1.01
"""Latency buckets are 1 % wide: percentiles to 1 % without keeping every sample (a 30-minute
soak answers millions of requests)."""

_LOG_RATIO = math.log(HISTOGRAM_RATIO)
_FLOOR_S = 1e-6


@attrs.define
class Histogram:
    """Latencies in logarithmic buckets."""

    buckets: Counter[int] = attrs.field(factory=Counter)

    def add(self, seconds: float) -> None:
        """Count one latency."""
        self.buckets[int(math.log(max(seconds, _FLOOR_S) / _FLOOR_S) / _LOG_RATIO)] += 1

    def merge(self, other: Histogram) -> None:
        """Add another's counts."""
        self.buckets.update(other.buckets)

    @property
    def count(self) -> int:
        """Latencies counted."""
        return sum(self.buckets.values())

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (nearest rank), s, at the middle of its bucket; NaN if empty."""
        total = self.count
        if not total:
            return math.nan
        rank = min(total - 1, int(q * total))
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen > rank:
                return _FLOOR_S * math.pow(HISTOGRAM_RATIO, bucket + 0.5)
        raise AssertionError("unreachable: the ranks add up to the total")


@attrs.define
class Tally:
    """What one class of clients (or the slow client) saw in one window."""

    clients: int = 0
    sent: int = 0
    answered: int = 0
    duplicates: int = 0
    unknown: int = 0
    notified: int = 0
    """Notifications (``proposal_ended`` when another client's request for an overlapping set,
    or for the same set, ended this one's proposal: ``spec/arbitration.md``)."""
    missing: int = 0
    broken: int = 0
    """Connections that ended before their last reply (the daemon closed them, or a bad line)."""
    outcomes: Counter[str] = attrs.field(factory=Counter)
    latency: Histogram = attrs.field(factory=Histogram)
    applied: Histogram = attrs.field(factory=Histogram)

    def merge(self, other: Tally) -> None:
        """Add another's counts (another window, or another class)."""
        self.clients = max(self.clients, other.clients)
        for name in ("sent", "answered", "duplicates", "unknown", "notified", "missing", "broken"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.outcomes.update(other.outcomes)
        self.latency.merge(other.latency)
        self.applied.merge(other.applied)

    @property
    def unexpected(self) -> int:
        """Answers neither expected nor busy."""
        return sum(n for o, n in self.outcomes.items() if o not in EXPECTED and o != BUSY)

    def exactly_once(self) -> bool:
        """Every request sent was answered, once."""
        return self.sent == self.answered and not (
            self.duplicates or self.unknown or self.missing or self.broken
        )

    def summary(self) -> dict[str, Any]:
        """The JSON-able figures (latencies in ms)."""
        return {
            "clients": self.clients,
            "sent": self.sent,
            "answered": self.answered,
            "duplicates": self.duplicates,
            "unknown": self.unknown,
            "notified": self.notified,
            "missing": self.missing,
            "broken": self.broken,
            "exactly_once": self.exactly_once(),
            "unexpected": self.unexpected,
            "outcomes": dict(sorted(self.outcomes.items())),
            "p50_ms": self.latency.quantile(0.5) * 1e3,
            "p99_ms": self.latency.quantile(0.99) * 1e3,
            "applied_p50_ms": self.applied.quantile(0.5) * 1e3,
            "applied_p99_ms": self.applied.quantile(0.99) * 1e3,
        }


@attrs.define
class SlowTally:
    """What the client that never reads did."""

    sent: int = 0
    connections: int = 0
    dropped: int = 0
    """Connections that broke under it: the daemon dropped it for not reading."""


@attrs.frozen(kw_only=True)
class Window:
    """One window's figures: per class, and the slow client's if it ran."""

    seconds: float
    tallies: Mapping[Kind, Tally]
    slow: SlowTally | None

    def total(self) -> Tally:
        """All classes together."""
        total = Tally()
        for tally in self.tallies.values():
            total.merge(tally)
        total.clients = sum(t.clients for t in self.tallies.values())
        return total


def outcome_of(message: Mapping[str, Any]) -> str:
    """An answer's class: its outcome, ``error CODE`` for a JSON-RPC error, or ``malformed``.

    An ``ignored`` answer that does not say it was superseded is ``ignored (other)``: under this
    load only a newer request for the same set may replace one.
    """
    result = message.get("result")
    if isinstance(result, dict) and isinstance(result.get("outcome"), str):
        outcome: str = result["outcome"]
        if outcome == "ignored" and "superseded" not in str(result.get("message", "")):
            return "ignored (other)"
        return outcome
    error = message.get("error")
    if isinstance(error, dict):
        return f"error {error.get('code')}"
    return "malformed"


def warm_up_s(seconds: float) -> float:
    """The soak's warm-up: a tenth of the run, at least two minutes, at most half of it."""
    return max(0.1 * seconds, min(120.0, 0.5 * seconds))


def rss_growth(samples: Sequence[tuple[float, float]], seconds: float) -> dict[str, Any]:
    """The growth of ``(elapsed s, RSS MB)`` samples from the warm-up's end to the last one."""
    warm = warm_up_s(seconds)
    after = [s for s in samples if s[0] >= warm] or list(samples[-1:])
    start, end = after[0][1], samples[-1][1]
    growth = (end - start) / start * 100 if start else math.nan
    return {
        "warm_up_s": warm,
        "warm_rss_mb": start,
        "end_rss_mb": end,
        "peak_rss_mb": max(s[1] for s in samples),
        "growth_pct": growth,
        "target_pct": TARGET_RSS_GROWTH_PCT,
        "ok": growth < TARGET_RSS_GROWTH_PCT,
    }


# --- the load (trio) --------------------------------------------------------------------------


def _params(batteries: tuple[int, ...], rng: random.Random) -> dict[str, Any]:
    low, high = POWER_PER_BATTERY_W
    power = rng.choice((-1, 1)) * rng.uniform(low, high) * len(batteries)
    return {"power_w": round(power, 1), "batteries": list(batteries)}


class Connection(Protocol):
    """What a load client needs of a connection (:class:`~distributord.client.trio.Client`)."""

    async def send(self, method: str, params: Mapping[str, Any] | None = None) -> int:
        """Send a request; its id (RpcClient's: 1, 2, 3, ...)."""

    async def receive(self) -> dict[str, Any]:
        """The next message."""


Connect = Callable[[], contextlib.AbstractAsyncContextManager[Connection]]


async def run_client(
    connect: Connect, assignment: Assignment, tally: Tally, *, deadline: float, depth: int
) -> None:
    """One ordinary client: ``depth`` requests outstanding until the deadline, then drain.

    One task writes, one reads, so a reply is read when it comes (its latency is not held up by
    a write) and a new request goes out as soon as a slot is free. After a busy answer the
    writer pauses :data:`BUSY_PAUSE_S`, as the protocol asks ("retry later").
    """
    rng = random.Random(assignment.client)
    outstanding: dict[int, float] = {}
    slots = trio.Semaphore(depth)
    last_id = 0
    resume_at = -math.inf
    sending = True

    async def read(client: Connection, done: trio.CancelScope) -> None:
        nonlocal resume_at
        while sending or outstanding:
            outcome = _take(await client.receive(), outstanding, last_id, tally)
            if outcome == BUSY:
                resume_at = trio.current_time() + BUSY_PAUSE_S
            if outcome:  # it answered a request of ours: a slot is free
                slots.release()
        done.cancel()

    with trio.move_on_at(deadline + DRAIN_S):
        try:
            async with connect() as client, trio.open_nursery() as nursery:
                nursery.start_soon(read, client, nursery.cancel_scope)
                with trio.move_on_at(deadline):
                    while True:
                        await slots.acquire()
                        await trio.sleep_until(resume_at)
                        # Recorded before it is written: the reply may be read before
                        # send() returns. RpcClient's ids are 1, 2, 3, ...
                        last_id += 1
                        outstanding[last_id] = trio.current_time()
                        tally.sent += 1
                        sent_id = await client.send("set_power", _params(assignment.batteries, rng))
                        assert sent_id == last_id, f"RpcClient sent id {sent_id}, not {last_id}"
                sending = False
                if not outstanding:  # the reader may wait for a reply that will not come
                    nursery.cancel_scope.cancel()
        except* (UnreachableError, BadReplyError, trio.BrokenResourceError):
            tally.broken += 1
    tally.missing += len(outstanding)


def _take(message: dict[str, Any], outstanding: dict[int, float], last_id: int, t: Tally) -> str:
    """Match one message to its request; its outcome (``""`` if it answers none)."""
    if "id" not in message and isinstance(message.get("method"), str):
        t.notified += 1  # a notification: told, not an answer
        return ""
    request_id = message.get("id")
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        t.unknown += 1  # a null id: nothing this client asked for
        return ""
    started = outstanding.pop(request_id, None)
    if started is None:
        # Ids are 1, 2, 3, ...: one sent and not outstanding has had its answer already.
        if 1 <= request_id <= last_id:
            t.duplicates += 1
        else:
            t.unknown += 1
        return ""
    elapsed = trio.current_time() - started
    outcome = outcome_of(message)
    t.answered += 1
    t.outcomes[outcome] += 1
    t.latency.add(elapsed)
    if outcome == "success":
        t.applied.add(elapsed)
    return outcome


async def _slow_client(
    sock: str,
    batteries: tuple[int, ...],
    tally: SlowTally,
    *,
    deadline: float,
    hz: float,
    reads: bool,
) -> None:
    """Send, never read; connect again when dropped, until the deadline.

    With ``reads``, the control: the same client, reading (and discarding) its replies.
    """
    rng = random.Random(-1)
    with trio.move_on_at(deadline):
        while True:
            stream = await trio.open_unix_socket(sock)
            tally.connections += 1
            try:
                async with stream, trio.open_nursery() as nursery:
                    if reads:
                        nursery.start_soon(_discard, stream)
                    for request_id in itertools.count(1):
                        line = request_line(request_id, "set_power", _params(batteries, rng))
                        await stream.send_all(line)
                        tally.sent += 1
                        await trio.sleep(1 / hz)
            except* trio.BrokenResourceError:
                tally.dropped += 1


async def _discard(stream: trio.SocketStream) -> None:
    while await stream.receive_some(65536):
        pass


async def battery_ids(sock: str) -> tuple[int, ...]:
    """The batteries the daemon manages (from ``get_status``)."""
    async with open_client(sock) as client:
        return await _battery_ids(client)


async def _battery_ids(client: Client) -> tuple[int, ...]:
    status = await client.result("get_status")
    return tuple(sorted(int(b["id"]) for b in status["batteries"]))


async def drive(
    sock: str | Path,
    plan: Plan,
    *,
    seconds: float,
    depth: int = DEPTH,
    slow_client: bool = False,
    slow_hz: float = SLOW_CLIENT_HZ,
    slow_reads: bool = False,
) -> Window:
    """Run the plan's clients against the daemon at ``sock`` for ``seconds``; their figures.

    Returns once every client has had its last reply, or :data:`DRAIN_S` after the window
    (what is still outstanding then is counted missing).
    """
    path = str(sock)
    tallies: dict[Kind, Tally] = {kind: Tally() for kind in KINDS}
    for assignment in plan.clients:
        tallies[assignment.kind].clients += 1
    slow = SlowTally() if slow_client else None
    deadline = trio.current_time() + seconds
    async with trio.open_nursery() as nursery:
        for assignment in plan.clients:
            tally = tallies[assignment.kind]
            nursery.start_soon(
                functools.partial(
                    run_client,
                    functools.partial(open_client, path),
                    assignment,
                    tally,
                    deadline=deadline,
                    depth=depth,
                )
            )
        if slow is not None:
            nursery.start_soon(
                functools.partial(
                    _slow_client,
                    path,
                    plan.slow,
                    slow,
                    deadline=deadline,
                    hz=slow_hz,
                    reads=slow_reads,
                )
            )
    return Window(
        seconds=seconds, tallies={k: t for k, t in tallies.items() if t.clients}, slow=slow
    )


# --- the processes ----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class DaemonProcess:
    """A running ``distributord run``: its pid and control socket."""

    pid: int
    sock: Path
    log: Path


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` (``VmRSS``), MB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@contextlib.asynccontextmanager
async def open_simulator(
    batteries: int, hz: float, api: str, directory: Path
) -> AsyncIterator[str]:
    """``distributord sim`` serving ``api`` with a uniform fleet; yields its address.

    As ``bench.link.simulator`` does, but with trio, and closing its pipe (a test
    run with ``filterwarnings = error`` notices a pipe left open). Its stderr goes to
    ``sim.log`` in ``directory``, shown if it does not start.
    """
    scenario = directory / "scenario.toml"
    scenario.write_text(f"[simulation]\ntelemetry_hz = {hz}\n", encoding="utf-8")
    errors = directory / "sim.log"
    command = [sys.executable, "-m", "distributord", "sim", "--port", "0", "--api", api]
    command += ["--batteries", str(batteries), "--scenario", str(scenario)]
    stderr = os.open(errors, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=stderr)
    finally:
        os.close(stderr)
    assert process.stdout is not None
    try:
        async with process.stdout, trio.open_nursery() as nursery:
            text = ""
            with trio.move_on_after(READY_S):
                async for chunk in process.stdout:
                    text += chunk.decode(errors="replace")
                    if "127.0.0.1:" in text and "\n" in text.split("127.0.0.1:", 1)[1]:
                        break
            if "127.0.0.1:" not in text:
                raise RuntimeError(
                    f"the simulator did not print its address:\n{errors.read_text()}"
                )
            address = "127.0.0.1:" + text.split("127.0.0.1:", 1)[1].split()[0].rstrip(".,")
            nursery.start_soon(_drain, process.stdout)  # what it prints later
            yield address
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.terminate()
            with trio.CancelScope(shield=True), trio.move_on_after(DRAIN_S):
                await process.wait()
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


@contextlib.asynccontextmanager
async def open_daemon(
    address: str, api: str, directory: Path, log: Path, *, batteries: int
) -> AsyncIterator[DaemonProcess]:
    """``distributord run`` against ``address`` speaking ``api``, once every battery works.

    Readiness comes from the daemon's own ``NOTIFY_SOCKET`` status line ("N working, ..."), not
    from polling. The version is pinned in a configuration file; the rest is the default. Its
    log (warnings and up) is appended to ``log``. On exit it gets SIGTERM and must stop with 0.
    """
    sock = directory / "control.sock"
    config = directory / "distributord.toml"
    config.write_text(f'[microgrid]\napi = "{api}"\n', encoding="utf-8")
    notify = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = directory / "notify"
    command = [sys.executable, "-m", "distributord", "run", "--config", str(config)]
    command += ["--microgrid", address, "--socket", str(sock), "--log-level", "warning"]
    with notify:
        await notify.bind(str(notify_path))
        environment = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
        stderr = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            process = await trio.lowlevel.open_process(command, env=environment, stderr=stderr)
        finally:
            os.close(stderr)  # the daemon has its own copy
        try:
            working = f"{batteries} working, 0 uncertain"
            with trio.fail_after(READY_S):
                while working not in (await notify.recv(65536)).decode(errors="replace"):
                    if process.poll() is not None:
                        raise RuntimeError(f"the daemon exited with {process.returncode}")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain_socket, notify)  # it updates its status every second
                yield DaemonProcess(pid=process.pid, sock=sock, log=log)
                nursery.cancel_scope.cancel()
            process.terminate()
            with trio.fail_after(DRAIN_S):
                code = await process.wait()
            if code != 0:
                raise RuntimeError(f"the daemon stopped with exit code {code}; see {log}")
        finally:
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()


async def _drain_socket(notify: trio.socket.SocketType) -> None:
    while True:
        await notify.recv(65536)


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    async for _ in stream:
        pass


async def _sample_rss(
    pid: int, samples: list[tuple[float, float]], start: float, say: Callable[[str], None]
) -> None:
    while True:
        samples.append((trio.current_time() - start, rss_mb(pid)))
        say(f"t {samples[-1][0]:.0f} s: daemon RSS {samples[-1][1]:.1f} MB")
        await trio.sleep(RSS_EVERY_S)


def _log_lines(log: Path) -> dict[str, int]:
    """What the daemon logged, by kind of line."""
    kinds = {
        "overlap warnings": "overlaps the request for",
        "standing setpoint ended": "standing setpoint for batteries",
        "slow client dropped": "; dropping it",  # "does not read" or "took no reply for"
        "tracebacks": "Traceback",
        "errors": " ERROR ",
    }
    counts = dict.fromkeys(kinds, 0)
    counts["lines"] = 0
    with open(log, encoding="utf-8", errors="replace") as text:
        for line in text:
            counts["lines"] += 1
            for name, needle in kinds.items():
                counts[name] += needle in line
    return counts


def _load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def run(
    *,
    clients: int = 32,
    seconds: float = 60.0,
    batteries: int = 20,
    api: str = "v1alpha18",
    depth: int = DEPTH,
    soak_minutes: float = 0.0,
    slow_client: bool = False,
    slow_hz: float = SLOW_CLIENT_HZ,
    slow_reads: bool = False,
    telemetry_hz: float = 1.0,
    daemon_log: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Start a simulator and a daemon, run the load, and return the figures as a JSON-able dict.

    One window of ``seconds``; with ``slow_client``, four (without, with, without, with); with
    ``soak_minutes``, one window of that length and the daemon's RSS sampled through it.

    Keys: ``settings``, ``machine``, ``load_average`` (before, after), ``plan`` (class → sets),
    ``windows`` (one dict per window: ``slow_client``, ``classes`` (class → figures),
    ``total``, ``slow``), ``total`` (all windows, per class and ``all``), ``slow_effect``
    (or None), ``soak`` (or None), ``daemon_log`` (line counts by kind), ``ok``.

    Raises:
        ValueError: Arguments that cannot make a run (see :func:`plan_sets`).
    """
    if api not in API_VERSIONS:
        raise ValueError(f"unknown API version {api!r}; known: {', '.join(API_VERSIONS)}")
    if slow_client and soak_minutes:
        raise ValueError("the soak and the slow client are separate runs")
    say = progress or (lambda _: None)
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    before = _load_average()
    with tempfile.TemporaryDirectory(prefix="distributord-load-") as directory:
        log = Path(daemon_log) if daemon_log else Path(directory) / "daemon.log"

        async def measure() -> dict[str, Any]:
            async with (
                open_simulator(batteries, telemetry_hz, api, Path(directory)) as address,
                open_daemon(address, api, Path(directory), log, batteries=batteries) as daemon,
            ):
                plan = plan_sets(clients, await battery_ids(str(daemon.sock)))
                say(f"daemon {daemon.pid} ready; {clients} clients")
                if soak_minutes:
                    samples: list[tuple[float, float]] = []
                    length = soak_minutes * 60
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(
                            _sample_rss, daemon.pid, samples, trio.current_time(), say
                        )
                        window = await drive(daemon.sock, plan, seconds=length, depth=depth)
                        nursery.cancel_scope.cancel()
                    samples.append((length, rss_mb(daemon.pid)))
                    return _report(plan, [(False, window)], samples, length)
                windows: list[tuple[bool, Window]] = []
                for slow in (False, True, False, True) if slow_client else (False,):
                    say(f"window {len(windows) + 1}: {seconds:g} s, slow client: {slow}")
                    window = await drive(
                        daemon.sock,
                        plan,
                        seconds=seconds,
                        depth=depth,
                        slow_client=slow,
                        slow_hz=slow_hz,
                        slow_reads=slow_reads,
                    )
                    windows.append((slow, window))
                return _report(plan, windows, None, 0.0)

        report = trio.run(measure)
        report["daemon_log"] = _log_lines(log)
    report["settings"] = {
        "clients": clients,
        "seconds": seconds,
        "batteries": batteries,
        "api": api,
        "depth": depth,
        "soak_minutes": soak_minutes,
        "slow_client": slow_client,
        "slow_hz": slow_hz,
        "slow_reads": slow_reads,
        "telemetry_hz": telemetry_hz,
    }
    report["machine"] = machine()
    report["load_average"] = {"before": before, "after": _load_average()}
    report["ok"] = report["ok"] and not report["daemon_log"]["tracebacks"]
    return report


def _report(
    plan: Plan,
    windows: Sequence[tuple[bool, Window]],
    samples: list[tuple[float, float]] | None,
    soak_s: float,
) -> dict[str, Any]:
    per_class: dict[str, Tally] = {}
    by_slow: dict[bool, Tally] = {False: Tally(), True: Tally()}
    by_slow_class: dict[tuple[bool, str], Tally] = {}
    listed = []
    for slow, window in windows:
        total = window.total()
        listed.append(
            {
                "slow_client": slow,
                "seconds": window.seconds,
                "classes": {k: t.summary() for k, t in window.tallies.items()},
                "total": total.summary(),
                "slow": attrs.asdict(window.slow) if window.slow else None,
            }
        )
        by_slow[slow].merge(total)
        by_slow[slow].clients = total.clients
        for kind, tally in window.tallies.items():
            per_class.setdefault(kind, Tally()).merge(tally)
            by_slow_class.setdefault((slow, kind), Tally()).merge(tally)
    everything = Tally()
    for tally in per_class.values():
        everything.merge(tally)
    everything.clients = len(plan.clients)
    slow_effect = None
    if any(slow for slow, _ in windows):

        def change(without: Tally, with_: Tally) -> dict[str, float]:
            a, b = without.latency.quantile(0.99) * 1e3, with_.latency.quantile(0.99) * 1e3
            return {"without_p99_ms": a, "with_p99_ms": b, "change_pct": (b - a) / a * 100}

        pooled = change(by_slow[False], by_slow[True])
        slow_effect = {
            **pooled,
            "per_class": {
                kind: change(by_slow_class[(False, kind)], by_slow_class[(True, kind)])
                for kind in per_class
            },
            "target_pct": TARGET_SLOW_CHANGE_PCT,
            "ok": pooled["change_pct"] < TARGET_SLOW_CHANGE_PCT,
        }
    soak = None
    if samples is not None:
        soak = {"samples": samples, **rss_growth(samples, soak_s)}
    ok = everything.exactly_once() and not everything.unexpected
    return {
        "plan": {
            kind: [list(a.batteries) for a in plan.clients if a.kind == kind] for kind in KINDS
        }
        | {"slow": [list(plan.slow)]},
        "windows": listed,
        "total": {
            "classes": {k: t.summary() for k, t in per_class.items()},
            "all": everything.summary(),
        },
        "slow_effect": slow_effect,
        "soak": soak,
        "ok": ok,
    }


# --- printing ---------------------------------------------------------------------------------


def _row(name: str, f: Mapping[str, Any]) -> str:
    outcomes: Mapping[str, int] = f["outcomes"]
    other = sum(n for o, n in outcomes.items() if o not in EXPECTED and o != BUSY)
    return (
        f"{name:<12} {f['clients']:>7} {f['sent']:>9} {f['answered']:>9} "
        f"{'yes' if f['exactly_once'] else 'NO':>5} {outcomes.get('success', 0):>8} "
        f"{outcomes.get('ignored', 0):>8} {outcomes.get(BUSY, 0):>6} {other:>6} "
        f"{f['p50_ms']:>7.2f} {f['p99_ms']:>7.2f} "
        f"{f['applied_p50_ms']:>7.2f} {f['applied_p99_ms']:>7.2f}"
    )


HEADER = (
    f"{'class':<12} {'clients':>7} {'sent':>9} {'answered':>9} {'once':>5} {'success':>8} "
    f"{'ignored':>8} {'busy':>6} {'other':>6} {'p50':>7} {'p99':>7} {'ap.p50':>7} {'ap.p99':>7}"
)


def _table(classes: Mapping[str, Mapping[str, Any]], total: Mapping[str, Any]) -> list[str]:
    lines = [HEADER]
    lines += [_row(kind, f) for kind, f in classes.items()]
    lines.append(_row("all", total))
    return lines


def _odd(figures: Mapping[str, Any]) -> Iterable[str]:
    """What went wrong in one summary, if anything."""
    for name in ("duplicates", "unknown", "missing", "broken"):
        if figures[name]:
            yield f"{name}: {figures[name]}"
    for outcome, n in figures["outcomes"].items():
        if outcome not in EXPECTED:
            yield f"{outcome}: {n}"


SOAK_ROWS = 20
"""The soak's table shows about this many of its samples (all of them are in the dict)."""


def _some(samples: Sequence[Sequence[float]], warm_up_s: float) -> list[Sequence[float]]:
    """Every n-th sample, about :data:`SOAK_ROWS` of them; the warm-up's end and the last always."""
    stride = max(1, math.ceil(len(samples) / SOAK_ROWS))
    warm = next((k for k, s in enumerate(samples) if s[0] >= warm_up_s), len(samples) - 1)
    keep = {*range(0, len(samples), stride), warm, len(samples) - 1}
    return [samples[k] for k in sorted(keep)]


def render(report: Mapping[str, Any]) -> str:
    """The report as the tables ``main`` prints."""
    s = report["settings"]
    lines = [
        f"machine: {report['machine']}",
        f"load average before: {report['load_average']['before']}, "
        f"after: {report['load_average']['after']}",
        f"{s['clients']} clients, depth {s['depth']}, {s['batteries']} batteries, API "
        f"{s['api']}, telemetry {s['telemetry_hz']:g} Hz",
        "sets: "
        + "; ".join(
            f"{kind} {' '.join('[' + ','.join(map(str, b)) + ']' for b in sets)}"
            for kind, sets in report["plan"].items()
            if sets
        ),
        "latency ms; p50/p99 over all answers, ap.* over applied (success) ones; "
        "'once': every id answered exactly once; busy: -32001 (overloaded)",
    ]
    for k, window in enumerate(report["windows"], 1):
        slow = window["slow"]
        title = f"window {k}: {window['seconds']:g} s"
        if window["slow_client"] and slow:
            title += (
                f", with the slow client at {s['slow_hz']:g} Hz"
                f"{', reading its replies (control)' if s['slow_reads'] else ''}"
                f" ({slow['sent']} sent, {slow['connections']} "
                f"connections, {slow['dropped']} dropped)"
            )
        lines += ["", title, *_table(window["classes"], window["total"])]
    if len(report["windows"]) > 1:
        total = report["total"]
        lines += ["", "all windows", *_table(total["classes"], total["all"])]
    effect = report["slow_effect"]
    if effect:
        lines += ["", "slow client: the others' p99, ms (two windows each)"]
        lines.append(f"{'class':<12} {'without':>8} {'with':>8} {'change':>8}")
        for kind, c in effect["per_class"].items():
            lines.append(
                f"{kind:<12} {c['without_p99_ms']:>8.2f} {c['with_p99_ms']:>8.2f} "
                f"{c['change_pct']:>+7.1f}%"
            )
        lines.append(
            f"{'all':<12} {effect['without_p99_ms']:>8.2f} {effect['with_p99_ms']:>8.2f} "
            f"{effect['change_pct']:>+7.1f}%  target < {effect['target_pct']:g} %: "
            f"{'✓' if effect['ok'] else '✗'}"
        )
    soak = report["soak"]
    if soak:
        lines += ["", "soak: the daemon's RSS", f"{'t (s)':>7} {'RSS (MB)':>9}"]
        lines += [f"{t:>7.0f} {rss:>9.1f}" for t, rss in _some(soak["samples"], soak["warm_up_s"])]
        lines.append(
            f"after the warm-up ({soak['warm_up_s']:.0f} s): {soak['warm_rss_mb']:.1f} MB; "
            f"end: {soak['end_rss_mb']:.1f} MB; peak {soak['peak_rss_mb']:.1f} MB; growth "
            f"{soak['growth_pct']:+.2f} %  target < {soak['target_pct']:g} %: "
            f"{'✓' if soak['ok'] else '✗'}"
        )
    log = report["daemon_log"]
    lines += ["", "daemon log: " + ", ".join(f"{k} {v}" for k, v in log.items())]
    problems = list(_odd(report["total"]["all"]))
    lines.append(
        "exactly once, no unexpected answers: "
        + ("✓" if report["ok"] else "✗ " + "; ".join(problems or ["see the daemon log"]))
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the load benchmark and print its tables; 1 if an answer was wrong or missing."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0, help="per window")
    parser.add_argument("--batteries", type=int, default=20)
    parser.add_argument("--api", default="v1alpha18", choices=API_VERSIONS)
    parser.add_argument("--depth", type=int, default=DEPTH, help="requests outstanding per client")
    parser.add_argument("--soak-minutes", type=float, default=0.0)
    parser.add_argument("--slow-client", action="store_true")
    parser.add_argument("--slow-client-hz", type=float, default=SLOW_CLIENT_HZ)
    parser.add_argument(
        "--slow-client-reads",
        action="store_true",
        help="the control: the same extra client, reading its replies",
    )
    parser.add_argument("--telemetry-hz", type=float, default=1.0, help="the simulator's rate")
    parser.add_argument("--daemon-log", default=None, help="keep the daemon's log here")
    parser.add_argument("--json", default=None, help="also write the report here, as JSON")
    args = parser.parse_args(argv)
    if args.slow_client and args.soak_minutes:
        parser.error("--slow-client and --soak-minutes are separate runs")
    try:
        report = run(
            clients=args.clients,
            seconds=args.seconds,
            batteries=args.batteries,
            api=args.api,
            depth=args.depth,
            soak_minutes=args.soak_minutes,
            slow_client=args.slow_client,
            slow_hz=args.slow_client_hz,
            slow_reads=args.slow_client_reads,
            telemetry_hz=args.telemetry_hz,
            daemon_log=args.daemon_log,
            progress=lambda text: print(text, file=sys.stderr, flush=True),
        )
    except ValueError as error:
        parser.error(str(error))
    print(render(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
