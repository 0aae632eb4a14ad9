"""The daemon's configuration: one frozen value, read from TOML, overridden by flags.

Theory of operation
-------------------
A :class:`Config` holds one frozen, keyword-only attrs class per TOML table (``[microgrid]``,
``[control]``, ``[arbitration]``, ``[distribution]``, ``[requests]``, ``[setpoints]``,
``[status]``, ``[logging]``), and the programs (``[programs.NAME]``, one
:class:`ProgramConfig` each, by name). ``Config()`` is the built-in defaults;
``config/distributord.toml`` documents every key and parses to exactly that value. Precedence
follows ``spec/operations.md``: flags (:func:`with_overrides`) beat the file, the file beats
the defaults.

Every key has one name, its dotted TOML path (``requests.default_timeout_s``), and the value
types check their own invariants -- types included, so a boolean is not a number even though
Python says ``True == 1`` -- whether they are built from a file or in Python. A failure is a
:class:`ConfigError` naming the source (the file, or the flag) and the key::

    distributord.toml: requests.default_timeout_s: must be a number in (0, 60], got 0

The parser adds only what a file can get wrong on top: invalid TOML, unknown tables and keys,
a table that is not a table. It is lenient in one documented way, as TOML readers expect: an
integer is accepted where a number is expected (``5`` for ``5.0``); the reverse is refused (a
count or a uid of ``5.0`` is a mistake worth pointing at).

The running daemon reads this value itself, not copies of it: each part is handed a view of
the tables it needs and reads a key where it uses it, so a key has one default and one check,
here. Values derived from keys that are facts of the configuration alone
(:attr:`DistributionConfig.search_budget_s`) are properties of their table.

The programs (``spec/arbitration.md``, "Programs") are the one table whose keys the operator
names: ``[programs.fcr]`` declares a program ``fcr``. ``programs.default`` always exists (at
priority 0 unless the file says otherwise): it is what a connection that says no ``hello`` acts
as. A program's ``users`` and ``groups`` are kept as written (names or ids); matching them
against a peer is :mod:`distributord.core.arbitration.programs`'s, which is handed the peer's
names, so this module stays free of the user database.

``arbitration.merge`` and the programs are live (:func:`is_live`): priorities and who may act
are the operator's policy, and a restart would end every program's proposals. The request loop
reads them at each decision and builds nothing from them: a new priority applies to the
proposals made after the reload, new limits to every merge after it, and a program removed can
make no new proposal, and its live proposals end. Their effects are tested in
``tests/shell/test_reload.py``.

Keys beyond the spec's table (``microgrid.stream_silence_s``, ``requests.drain_timeout_s``,
``logging.level``, ``logging.libraries``) are extensions; the example file marks them so.

The configuration is a file and its drop-ins (``spec/operations.md``, "Configuration files"):
``conf.d/*.toml`` beside it, read in name order, each overriding the keys it sets, so that an
operator changes settings in files the package never ships and an upgrade never stops at a
conffile prompt. :func:`load_config` is the one reader (``run``, the reload, ``check-config``):
it merges the files' TOML documents before anything is checked, so a drop-in may set a key that
only makes sense beside another file's (``status.max_blocking_s`` against ``min_blocking_s``),
and remembers which file set each key, to name it in an error::

    /etc/distributord/conf.d/50-site.toml: requests.default_timeout_s: must be a number in ...

Tables merge key by key; a program is the exception: ``[programs.NAME]`` in a later file
replaces that program whole, because a program is one grant (who, at which priority, with which
limits) and TOML cannot unset a key, so a merge could never lift a limit an earlier file set. A
program cannot be removed by a later file; it is removed where it is defined.

Pure: no trio, no grpc, no clock. :func:`load_config` reads the files; everything else works on
values.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
import re
import tomllib
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from distributord.core.distribution.limits import Limit, limit_tree
from distributord.core.distribution.rows import MAX_EXPONENT
from distributord.core.distribution.search import DEFAULT_SEARCH_BUDGET_S
from distributord.core.errors import ConfigError, LimitOverlapError
from distributord.core.model import MAX_REQUEST_TIMEOUT_S
from distributord.core.protocol import DEFAULT_SOCKET
from distributord.core.values import is_component_id, is_integer, is_number, short_number

DEFAULT_MICROGRID_ADDRESS = "127.0.0.1:50051"
"""The Microgrid API's usual port on the local controller."""

MAX_UNIX_PATH_BYTES = 107
"""``sun_path`` holds 108 bytes on Linux, one of them the terminating NUL; a longer path
cannot be bound, so it is refused here rather than at bind time."""

MAX_ID = 2**32 - 2
"""uid_t and gid_t are 32 bits and ``(uid_t) -1`` means "no id"; a larger number is a typo
that would never match a peer."""

MIN_SETPOINT_LIFETIME_S = 10
"""The Microgrid API's shortest ``request_lifetime`` (``spec/microgrid-v1.md``)."""

MAX_SETPOINT_LIFETIME_S = 900
"""The Microgrid API's longest ``request_lifetime``."""

MAX_DERATE_BAND_PCT = 100.0
"""A SoC span is at most 100 percentage points: a wider band would derate every battery
everywhere, which no site means."""

MAX_SEARCH_BUDGET_MS = 1000.0
"""A search longer than a second would eat most of a request's deadline (5 s by default)."""

API_VERSIONS = ("v1alpha18", "v1alpha19", "v1")
"""The Microgrid API versions spoken, in the order ``microgrid.api = "auto"`` tries them."""

API_CHOICES = ("auto", *API_VERSIONS)
"""What ``microgrid.api`` accepts."""

LOG_LEVELS = ("debug", "info", "warning", "error")
"""The levels an operator can choose, quietest last."""

MERGES = ("add", "override")
"""What ``arbitration.merge`` accepts: how a bucket's proposals combine
(``spec/arbitration.md``)."""

PQ_PRIORITIES = ("active", "reactive")
"""What ``plant.pq_priority`` accepts: which of active and reactive power an inverter's
apparent-power limit serves first (``spec/plant.md``)."""

MIN_RAMP_STEP_S = 0.1
"""The shortest ``ramp.step_s``: ten re-plans a second of every ramping bucket is plenty."""

MAX_RAMP_STEP_S = 60.0
"""The longest ``ramp.step_s``: a ramp stepped more rarely would hardly be a ramp."""

DROP_IN_DIR = "conf.d"
"""The directory of drop-ins, beside the configuration file (:func:`config_files`)."""

DEFAULT_PROGRAM = "default"
"""The program every allowed peer acts as until it says ``hello``; it always exists."""

PROGRAM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
"""A program's name: it appears in log lines, metrics labels and ``hello``, so a short word."""

MAX_PRIORITY = 2**31 - 1
"""Priorities are integers in ``-MAX_PRIORITY..MAX_PRIORITY``: any an operator would write, and
no number so large it is surely a typo."""

_A = TypeVar("_A", bound=attrs.AttrsInstance)

LIVE: Mapping[str, bool] = {"live": True}
"""Field metadata: a reload (SIGHUP) applies this key to the running daemon. Declared here,
beside each setting, so the list of live keys cannot drift from the settings (:data:`LIVE_KEYS`)."""


# --- values and their checks ------------------------------------------------------------------


def _show(value: object) -> str:
    """A value as the operator wrote it: TOML's ``true``; a number as short as it goes.

    A number is shown as ``0`` rather than ``0.0`` because integers are accepted for numbers
    and arrive converted; checks of integers use ``repr`` (``60.0`` is the mistake there).
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return short_number(value)
    return repr(value)


def _to_float(value: float) -> float:
    """Converter: an integer where a number is expected becomes a float.

    Anything else is left for the validator to judge (a bool stays a bool, and is refused).
    """
    return float(value) if is_integer(value) else value


def _to_tuple(value: Sequence[int]) -> tuple[int, ...]:
    """Converter: a TOML array becomes a tuple; anything else is left for the validator."""
    if isinstance(value, list | tuple):
        return tuple(value)
    return value  # type: ignore[return-value]  # not a sequence: the validator refuses it


def _to_lower(value: str) -> str:
    """Converter: log levels are case-insensitive (``--log-level INFO`` works)."""
    return value.lower() if isinstance(value, str) else value


_Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _number(
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
) -> _Validator:
    """A validator: a finite number in the interval (``low_open``: ``low`` itself excluded)."""
    if high == math.inf:
        wanted = f"a number > {low:g}" if low_open else f"a number >= {low:g}"
        wanted += " and finite"
    else:
        wanted = f"a number in {'(' if low_open else '['}{low:g}, {high:g}]"

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        ok = (
            is_number(value)
            and math.isfinite(value)
            and (low < value if low_open else low <= value)
            and value <= high
        )
        if not ok:
            raise ConfigError(f"must be {wanted}, got {_show(value)}", key=attribute.name)

    check.__doc__ = wanted  # what it accepts, for distributord.toml(5) (:func:`accepts`)
    return check


def _integer(*, low: int, high: int | None = None) -> _Validator:
    """A validator: an integer (not a float, not a bool) in ``low..high``."""
    wanted = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not (is_integer(value) and low <= value and (high is None or value <= high)):
            shown = repr(value) if isinstance(value, float) else _show(value)
            raise ConfigError(f"must be {wanted}, got {shown}", key=attribute.name)

    check.__doc__ = wanted
    return check


def _boolean(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """True or false (a number is not a boolean)."""
    if not isinstance(value, bool):
        raise ConfigError(f"must be true or false, got {_show(value)}", key=attribute.name)


def _id_list(what: str) -> _Validator:
    """A validator: a sequence of uids or gids."""

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, tuple):
            raise ConfigError(
                f"must be a list of {what}s (integers in 0..{MAX_ID}), got {_show(value)}",
                key=attribute.name,
            )
        for item in value:
            if not (is_integer(item) and 0 <= item <= MAX_ID):
                shown = repr(item) if isinstance(item, float) else _show(item)
                raise ConfigError(
                    f"must hold {what}s (integers in 0..{MAX_ID}), got {shown}",
                    key=attribute.name,
                )

    check.__doc__ = f"a list of {what}s (integers in 0..{MAX_ID})"
    return check


def _address(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    """HOST:PORT (an IPv6 host in brackets) with a port in 1..65535."""
    wanted = "must be HOST:PORT (an IPv6 host in brackets) with a port in 1..65535"
    if not isinstance(value, str):
        raise ConfigError(f"{wanted}, got {_show(value)}", key=attribute.name)
    host, colon, port = value.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    ok = (
        bool(colon)
        and port.isascii()
        and port.isdigit()
        and 1 <= int(port) <= 65535
        and bool(host.strip("[]"))
        and not any(c.isspace() for c in host)
        # An unbracketed colon makes "::1:50051" ambiguous; gRPC wants "[::1]:50051".
        and (bracketed or (":" not in host and "[" not in host and "]" not in host))
    )
    if not ok:
        raise ConfigError(f"{wanted}, got {value!r}", key=attribute.name)


METRICS_OFF = "off"
"""``metrics.listen``'s value for "serve no metrics" (the default)."""


def _listen(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    """Off, or HOST:PORT (an IPv6 host in brackets) with a port in 1..65535."""
    if value == METRICS_OFF:
        return
    try:
        _address(_, attribute, value)
    except ConfigError:
        raise ConfigError(
            f'must be "{METRICS_OFF}" or HOST:PORT (an IPv6 host in brackets) with a port in '
            f"1..65535, got {_show(value)}",
            key=attribute.name,
        ) from None


def _unix_path(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value or "\0" in value:
        raise ConfigError(f"must be a file system path, got {_show(value)}", key=attribute.name)
    size = len(os.fsencode(value))
    if size > MAX_UNIX_PATH_BYTES:
        raise ConfigError(
            f"is {size} bytes long; a Unix socket path holds at most {MAX_UNIX_PATH_BYTES}",
            key=attribute.name,
        )


def _at_least_min_blocking(config: Any, attribute: attrs.Attribute[float], value: float) -> None:
    """At least min_blocking_s (``status.max_blocking_s``, checked after min_blocking_s)."""
    if value < config.min_blocking_s:
        raise ConfigError(
            f"must be at least min_blocking_s ({_show(config.min_blocking_s)}), got {_show(value)}",
            key=attribute.name,
        )


def _to_names(value: Sequence[str | int]) -> tuple[str | int, ...]:
    """Converter: a TOML array of names or ids becomes a tuple; anything else is left."""
    if isinstance(value, list | tuple):
        return tuple(value)
    return value  # type: ignore[return-value]  # not a sequence: the validator refuses it


def _to_optional_float(value: float | None) -> float | None:
    """Converter: :func:`_to_float`, with ``None`` (the key left out) kept."""
    return None if value is None else _to_float(value)


def _to_optional_tuple(value: Sequence[int] | None) -> tuple[int, ...] | None:
    """Converter: :func:`_to_tuple`, with ``None`` (the key left out) kept."""
    return None if value is None else _to_tuple(value)


def _optional(validator: _Validator) -> _Validator:
    """A validator: ``None`` (the key left out), or what ``validator`` accepts."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            validator(instance, attribute, value)

    check.__doc__ = f"left out (not set), or {validator.__doc__}"
    return check


def _choice(choices: Sequence[str]) -> _Validator:
    """A validator: one of ``choices``."""

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise ConfigError(
                f"must be one of {', '.join(choices)}, got {_show(value)}", key=attribute.name
            )

    check.__doc__ = f"one of {', '.join(choices)}"
    return check


def _principals(what: str) -> _Validator:
    """A validator: a sequence of ``what`` names (non-empty strings) or ids (0..MAX_ID)."""
    wanted = f"{what} names or {what[0]}ids (integers in 0..{MAX_ID})"

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, tuple):
            raise ConfigError(f"must be a list of {wanted}, got {_show(value)}", key=attribute.name)
        for item in value:
            named = isinstance(item, str) and item.strip() == item and item != ""
            if not (named or (is_integer(item) and 0 <= item <= MAX_ID)):
                shown = repr(item) if isinstance(item, float) else _show(item)
                raise ConfigError(f"must hold {wanted}, got {shown}", key=attribute.name)

    check.__doc__ = f"a list of {wanted}"
    return check


def _component_ids(what: str, *, low: int, left_out: str) -> _Validator:
    """A validator: left out (None), or a non-empty list of ``what`` ids (integers >= ``low``).

    ``left_out`` says what leaving the key out means.
    """

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        wanted = f"a non-empty list of {what} ids (leave it out {left_out})"
        if not isinstance(value, tuple) or not value:
            raise ConfigError(f"must be {wanted}, got {_show(value)}", key=attribute.name)
        for item in value:
            if not (is_component_id(item) and item >= low):
                shown = repr(item) if isinstance(item, float) else _show(item)
                raise ConfigError(
                    f"must hold {what} ids (integers >= {low}), got {shown}", key=attribute.name
                )

    check.__doc__ = f"Left out ({left_out}), or a non-empty list of {what} ids (integers >= {low})."
    return check


_battery_ids = _component_ids("battery", low=0, left_out="for every battery")
_inverter_ids = _component_ids("inverter", low=1, left_out="with grid = true")


_unix_path.__doc__ = f"a file system path of at most {MAX_UNIX_PATH_BYTES} bytes (a Unix socket's)"


# --- the tables ---------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class MicrogridConfig:
    """``[microgrid]``: where the Microgrid API is.

    Attributes:
        address: The API's endpoint, ``HOST:PORT`` (``[::1]:50051`` for an IPv6 host).
        api: The API version: ``"auto"`` negotiates (v1alpha18, then v1alpha19, then v1:
            :data:`API_VERSIONS`, moving on only when a version is not served), or one
            version, pinned.
        stream_silence_s: A telemetry stream that sends nothing for this long is replaced
            (extension of the spec's table).
    """

    address: str = attrs.field(default=DEFAULT_MICROGRID_ADDRESS, validator=_address)
    api: str = attrs.field(default="auto", converter=_to_lower, validator=_choice(API_CHOICES))
    stream_silence_s: float = attrs.field(
        default=5.0, converter=_to_float, validator=_number(low=0.0, low_open=True)
    )


@attrs.frozen(kw_only=True)
class ControlConfig:
    """``[control]``: the control socket and who may use it.

    Attributes:
        socket: The socket's path, used when not socket-activated.
        allowed_uids: Peer uids allowed to connect besides the daemon's own and root.
        allowed_gids: Peers with one of these groups, primary or supplementary, may connect
            too.
        max_connections: Connections served at once; one more is told "busy" and closed.
    """

    socket: str = attrs.field(default=DEFAULT_SOCKET, validator=_unix_path)
    allowed_uids: tuple[int, ...] = attrs.field(
        default=(),
        converter=_to_tuple,
        validator=_id_list("uid"),
        metadata=LIVE,
    )
    allowed_gids: tuple[int, ...] = attrs.field(
        default=(),
        converter=_to_tuple,
        validator=_id_list("gid"),
        metadata=LIVE,
    )
    max_connections: int = attrs.field(default=64, validator=_integer(low=1), metadata=LIVE)


@attrs.frozen(kw_only=True)
class ArbitrationConfig:
    """``[arbitration]``: how programs that share batteries are combined (``spec/arbitration.md``).

    Attributes:
        merge: ``"add"``: each proposal's grant adds to the target, and the window it leaves to
            lower priorities shifts by it; ``"override"``: the highest proposal with a power
            sets the target and the others only narrow the window.
    """

    merge: str = attrs.field(default="add", validator=_choice(MERGES), metadata=LIVE)


@attrs.frozen(kw_only=True)
class ProgramConfig:
    """``[programs.NAME]``: one program, who may act as it, and the operator's limits on it.

    Attributes:
        priority: Higher wins where programs' batteries overlap; programs cannot change it.
        users: User names or uids that may act as this program (root may act as any).
        groups: Group names or gids (the peer's primary or supplementary groups) that may act
            as it.
        max_discharge_w: If set, the program's proposals never discharge more than this (a
            magnitude, in watts, above 0).
        max_charge_w: If set, the program's proposals never charge more than this.
        batteries: If set, the only batteries it may propose for (component ids); otherwise
            every battery.
        ramp_exempt: Whether its grant moves at once, outside ``[ramp]``'s rate (frequency
            response, which grid codes exempt from ramp limits; ``spec/plant.md``).
    """

    priority: int = attrs.field(default=0, validator=_integer(low=-MAX_PRIORITY, high=MAX_PRIORITY))
    users: tuple[str | int, ...] = attrs.field(
        default=(), converter=_to_names, validator=_principals("user")
    )
    groups: tuple[str | int, ...] = attrs.field(
        default=(), converter=_to_names, validator=_principals("group")
    )
    max_discharge_w: float | None = attrs.field(
        default=None,
        converter=_to_optional_float,
        validator=_optional(_number(low=0.0, low_open=True)),
    )
    max_charge_w: float | None = attrs.field(
        default=None,
        converter=_to_optional_float,
        validator=_optional(_number(low=0.0, low_open=True)),
    )
    batteries: tuple[int, ...] | None = attrs.field(
        default=None, converter=_to_optional_tuple, validator=_battery_ids
    )
    ramp_exempt: bool = attrs.field(default=False, validator=_boolean)


def _to_programs(value: Mapping[str, ProgramConfig]) -> Mapping[str, ProgramConfig]:
    """Converter: a read-only mapping of the programs, ``default`` added when missing."""
    if not isinstance(value, Mapping):
        return value  # the validator refuses it
    programs = dict(value)
    programs.setdefault(DEFAULT_PROGRAM, ProgramConfig())
    return types.MappingProxyType(programs)


def _programs(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, Mapping):
        raise ConfigError(f"must be a table of programs, got {_show(value)}", key=attribute.name)
    for name, program in value.items():
        if not (isinstance(name, str) and PROGRAM_NAME.fullmatch(name)):
            raise ConfigError(
                "a program's name is 1 to 64 letters, digits, '_', '.' or '-', not starting"
                " with '.' or '-'",
                key=f"{attribute.name}.{name}",
            )
        if not isinstance(program, ProgramConfig):
            raise ConfigError(
                f"must be a table ([{attribute.name}.{name}]), got {_show(program)}",
                key=f"{attribute.name}.{name}",
            )
    default = value[DEFAULT_PROGRAM]
    for key in ("users", "groups"):
        if getattr(default, key):
            raise ConfigError(
                "every allowed peer that says no hello acts as the default program; who may"
                " use the socket is control.allowed_uids and control.allowed_gids",
                key=f"{attribute.name}.{DEFAULT_PROGRAM}.{key}",
            )


@attrs.frozen(kw_only=True)
class DistributionConfig:
    """``[distribution]``: how power is split (``spec/distribution.md``).

    Attributes:
        exponent: Higher values make SoCs converge faster; 0 splits by capacity alone. Up to
            16 (``MAX_EXPONENT``), the range the spec documents.
        search_budget_ms: How long the search over exclusion minimums may take per request.
        compensate_unused: Whether the fresh measured power of the requested batteries that
            are not used is taken off the request before the split (``spec/distribution.md``,
            "Power the daemon cannot command"). Live: the next request or re-plan follows it.
        derate_band_pct: SoC derating (``spec/distribution.md``, "SoC derating"): a battery
            whose available SoC in the request's direction (room to its SoC bound) is below
            this many percentage points has its power cap scaled down in proportion, to 0 at
            the bound; its share by weight is unchanged. 0 turns it off. Up to 100
            (``MAX_DERATE_BAND_PCT``). The request check's bounds include it. Live, like the
            exponent.
    """

    exponent: float = attrs.field(
        default=1.0,
        converter=_to_float,
        validator=_number(low=0.0, high=MAX_EXPONENT),
        metadata=LIVE,
    )
    search_budget_ms: float = attrs.field(
        default=DEFAULT_SEARCH_BUDGET_S * 1000.0,
        converter=_to_float,
        validator=_number(low=0.0, low_open=True, high=MAX_SEARCH_BUDGET_MS),
        metadata=LIVE,
    )
    compensate_unused: bool = attrs.field(default=True, validator=_boolean, metadata=LIVE)
    derate_band_pct: float = attrs.field(
        default=0.0,
        converter=_to_float,
        validator=_number(low=0.0, high=MAX_DERATE_BAND_PCT),
        metadata=LIVE,
    )

    @property
    def search_budget_s(self) -> float:
        """:attr:`search_budget_ms` in seconds, as the search takes it."""
        return self.search_budget_ms / 1000.0


@attrs.frozen(kw_only=True)
class PlantConfig:
    """``[plant]``: how active and reactive power share an inverter (``spec/plant.md``).

    Attributes:
        pq_priority: ``"active"``: active power is split first and reactive power gets what
            the apparent-power limit leaves (``|Q| <= sqrt(S² - P²)``); ``"reactive"``: reactive
            power first, and the active caps shrink to ``sqrt(S² - Q²)``. Live.
    """

    pq_priority: str = attrs.field(
        default="active", converter=_to_lower, validator=_choice(PQ_PRIORITIES), metadata=LIVE
    )


@attrs.frozen(kw_only=True)
class RampConfig:
    """``[ramp]``: how fast a bucket's applied power may move (``spec/plant.md``, "Ramp rates").

    Attributes:
        max_w_per_s: The largest change of a bucket's applied target per second, W/s (a
            magnitude); ``0`` (the default) is off: targets move at once. Programs with
            ``ramp_exempt`` move their grant at once whatever this says. Live: a ramp under
            way continues at the new rate from where its power is.
        step_s: How often a ramping target is re-applied, s.
    """

    max_w_per_s: float = attrs.field(
        default=0.0, converter=_to_float, validator=_number(low=0.0), metadata=LIVE
    )
    step_s: float = attrs.field(
        default=1.0,
        converter=_to_float,
        validator=_number(low=MIN_RAMP_STEP_S, high=MAX_RAMP_STEP_S),
        metadata=LIVE,
    )

    @property
    def enabled(self) -> bool:
        """Whether targets ramp at all."""
        return self.max_w_per_s > 0.0


@attrs.frozen(kw_only=True)
class RequestsConfig:
    """``[requests]``: the request queue and its deadlines.

    Attributes:
        default_timeout_s: A request's deadline when the client names none.
        queue_size: Requests waiting at most; beyond that a client is told the daemon is busy.
        drain_timeout_s: On SIGTERM, how long requests in flight may take to finish
            (extension of the spec's table).
    """

    default_timeout_s: float = attrs.field(
        default=5.0,
        converter=_to_float,
        validator=_number(low=0.0, low_open=True, high=MAX_REQUEST_TIMEOUT_S),
        metadata=LIVE,
    )
    queue_size: int = attrs.field(default=64, validator=_integer(low=1))
    drain_timeout_s: float = attrs.field(
        default=10.0,
        converter=_to_float,
        validator=_number(low=0.0, low_open=True),
        metadata=LIVE,
    )


@attrs.frozen(kw_only=True)
class SetpointsConfig:
    """``[setpoints]``: how long a commanded setpoint holds.

    Attributes:
        lifetime_s: Sent as the API's ``request_lifetime``; the inverter falls back to 0 W when
            it runs out, and the daemon refreshes standing setpoints well before that.
    """

    lifetime_s: int = attrs.field(
        default=60,
        validator=_integer(low=MIN_SETPOINT_LIFETIME_S, high=MAX_SETPOINT_LIFETIME_S),
        metadata=LIVE,
    )


@attrs.frozen(kw_only=True)
class StatusConfig:
    """``[status]``: when a battery counts as working (``spec/status.md``).

    Attributes:
        max_data_age_s: Telemetry older than this is stale.
        min_blocking_s: The first blocking window after a failed command.
        max_blocking_s: The longest blocking window (at least ``min_blocking_s``).
        broken_cache_ttl_s: How long the telemetry of a battery that is not working is kept
            for requests with ``include_broken_batteries``.
    """

    max_data_age_s: float = attrs.field(
        default=10.0,
        converter=_to_float,
        validator=_number(low=0.0, low_open=True),
        metadata=LIVE,
    )
    min_blocking_s: float = attrs.field(
        default=1.0,
        converter=_to_float,
        validator=_number(low=0.0, low_open=True),
        metadata=LIVE,
    )
    max_blocking_s: float = attrs.field(
        default=30.0,
        converter=_to_float,
        validator=[_number(low=0.0, low_open=True), _at_least_min_blocking],
        metadata=LIVE,
    )
    broken_cache_ttl_s: float = attrs.field(
        default=9000.0,
        converter=_to_float,
        validator=_number(low=0.0, low_open=True),
        metadata=LIVE,
    )


@attrs.frozen(kw_only=True)
class MetricsConfig:
    """``[metrics]``: Prometheus metrics.

    Attributes:
        listen: ``HOST:PORT`` to serve ``/metrics`` on over HTTP, or ``"off"``. Needs a restart.
    """

    listen: str = attrs.field(default=METRICS_OFF, validator=_listen)


@attrs.frozen(kw_only=True)
class LoggingConfig:
    """``[logging]`` (extension of the spec's table).

    Attributes:
        level: ``debug``, ``info``, ``warning`` or ``error`` (any case; stored in lower case).
        libraries: The same, for the other libraries' loggers (grpc's, asyncio's), never
            more verbose than ``level``: their debug lines flood a debug log, so they are kept
            to warnings unless asked (``level = "error"`` keeps them to errors too).
    """

    level: str = attrs.field(
        default="info", converter=_to_lower, validator=_choice(LOG_LEVELS), metadata=LIVE
    )
    libraries: str = attrs.field(
        default="warning", converter=_to_lower, validator=_choice(LOG_LEVELS), metadata=LIVE
    )


def _limit_name(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    """Any non-empty name."""
    if not (isinstance(value, str) and value.strip()):
        raise ConfigError(f"must be a non-empty name, got {_show(value)}", key=attribute.name)


@attrs.frozen(kw_only=True)
class LimitConfig:
    """``[[limits]]``: a limit over several inverters together: a feeder, a fuse, the grid.

    Attributes:
        name: What results and logs call it; unique among the limits.
        inverters: The inverter ids it covers; or leave it out and set ``grid = true``.
        grid: Whether it covers every inverter behind the grid connection point (instead of
            ``inverters``).
        max_charge_w: The most its inverters may charge together, in watts (a number >= 0);
            left out: no limit on charging.
        max_discharge_w: The most they may discharge together, in watts, as a magnitude;
            left out: no limit on discharging. At least one of the two is set.
    """

    name: str = attrs.field(validator=_limit_name)
    inverters: tuple[int, ...] | None = attrs.field(
        default=None, converter=_to_optional_tuple, validator=_inverter_ids
    )
    grid: bool = attrs.field(default=False, validator=_boolean)
    max_charge_w: float | None = attrs.field(
        default=None, converter=_to_optional_float, validator=_optional(_number(low=0.0))
    )
    max_discharge_w: float | None = attrs.field(
        default=None, converter=_to_optional_float, validator=_optional(_number(low=0.0))
    )

    def __attrs_post_init__(self) -> None:
        if (self.inverters is None) == (not self.grid):
            raise ConfigError(
                "give either inverters = [...] or grid = true, not both"
                if self.grid
                else "give either inverters = [...] or grid = true",
                key="inverters",
            )
        if self.max_charge_w is None and self.max_discharge_w is None:
            raise ConfigError("give max_charge_w, max_discharge_w or both", key="max_charge_w")

    def limit(self, grid_inverters: Iterable[int] = ()) -> Limit:
        """The limit as the split takes it (``inf`` where a maximum is left out).

        Args:
            grid_inverters: The inverters behind the grid connection point, for a ``grid``
                limit; a limit over ``inverters`` ignores them.
        """
        inverters = self.inverters if self.inverters is not None else grid_inverters
        return Limit(
            name=self.name,
            inverters=frozenset(inverters),
            max_charge_w=math.inf if self.max_charge_w is None else self.max_charge_w,
            max_discharge_w=math.inf if self.max_discharge_w is None else self.max_discharge_w,
        )


def _to_limits(value: Sequence[LimitConfig]) -> tuple[LimitConfig, ...]:
    """Converter: a list of limits becomes a tuple; anything else is left for the validator."""
    if isinstance(value, list | tuple):
        return tuple(value)
    return value  # type: ignore[return-value]  # not a sequence: the validator refuses it


def _limits(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Limits with unique names that nest or are disjoint (a grid limit holds every inverter)."""
    if not isinstance(value, tuple):
        raise ConfigError(
            f"must be an array of tables ([[{attribute.name}]]), got {_show(value)}",
            key=attribute.name,
        )
    seen: dict[str, int] = {}
    for index, limit in enumerate(value):
        key = f"{attribute.name}[{index}]"
        if not isinstance(limit, LimitConfig):
            raise ConfigError(
                f"must be a table ([[{attribute.name}]]), got {_show(limit)}", key=key
            )
        if limit.name in seen:
            raise ConfigError(
                f"{limit.name!r} is also the name of {attribute.name}[{seen[limit.name]}]; "
                "names are unique",
                key=f"{key}.name",
            )
        seen[limit.name] = index
    try:
        limit_tree(limit.limit() for limit in value if limit.inverters is not None)
    except LimitOverlapError as error:
        first, second = seen[error.first.name], seen[error.second.name]
        raise ConfigError(
            f"overlaps {attribute.name}[{first}] ({error.first.name!r}) without one containing"
            f" the other (both hold inverter {error.inverter}); limits must nest or be disjoint",
            key=f"{attribute.name}[{second}].inverters",
        ) from None


@attrs.frozen(kw_only=True)
class Config:
    """The daemon's whole configuration; ``Config()`` is the built-in defaults.

    Attributes:
        microgrid: ``[microgrid]``.
        control: ``[control]``.
        arbitration: ``[arbitration]``.
        distribution: ``[distribution]``.
        plant: ``[plant]``.
        ramp: ``[ramp]``.
        requests: ``[requests]``.
        setpoints: ``[setpoints]``.
        status: ``[status]``; the status machines read it.
        metrics: ``[metrics]``.
        logging: ``[logging]``.
        programs: ``[programs.NAME]``, by name, read-only; ``default`` is always there.
        limits: ``[[limits]]``, in file order (``spec/plant.md``, "Group limits"). Live: the
            next request's split follows them, and every standing setpoint is planned again at
            once.
    """

    microgrid: MicrogridConfig = attrs.field(factory=MicrogridConfig)
    control: ControlConfig = attrs.field(factory=ControlConfig)
    arbitration: ArbitrationConfig = attrs.field(factory=ArbitrationConfig)
    distribution: DistributionConfig = attrs.field(factory=DistributionConfig)
    plant: PlantConfig = attrs.field(factory=PlantConfig)
    ramp: RampConfig = attrs.field(factory=RampConfig)
    requests: RequestsConfig = attrs.field(factory=RequestsConfig)
    setpoints: SetpointsConfig = attrs.field(factory=SetpointsConfig)
    status: StatusConfig = attrs.field(factory=StatusConfig)
    metrics: MetricsConfig = attrs.field(factory=MetricsConfig)
    logging: LoggingConfig = attrs.field(factory=LoggingConfig)
    # Not hashed: a mapping is not hashable (equal configurations still hash equal).
    programs: Mapping[str, ProgramConfig] = attrs.field(
        factory=dict, converter=_to_programs, validator=_programs, hash=False
    )
    limits: tuple[LimitConfig, ...] = attrs.field(
        default=(), converter=_to_limits, validator=_limits
    )

    @classmethod
    def default(cls) -> Config:
        """The built-in defaults (the same as ``Config()``)."""
        return cls()


TABLES: Mapping[str, type[attrs.AttrsInstance]] = {
    "microgrid": MicrogridConfig,
    "control": ControlConfig,
    "arbitration": ArbitrationConfig,
    "distribution": DistributionConfig,
    "plant": PlantConfig,
    "ramp": RampConfig,
    "requests": RequestsConfig,
    "setpoints": SetpointsConfig,
    "status": StatusConfig,
    "metrics": MetricsConfig,
    "logging": LoggingConfig,
}
"""Table name to the class that holds it, in the order of :class:`Config` (``[programs.NAME]``,
whose keys the operator names, is apart: :data:`PROGRAMS`)."""

PROGRAMS = "programs"
"""The table of programs: one subtable per program, :class:`ProgramConfig`."""

LIMITS = "limits"
"""The array of tables of group limits: ``[[limits]]``, one :class:`LimitConfig` each."""

KNOWN_TABLES = (*TABLES, PROGRAMS, LIMITS)
"""Every top-level table a file may have."""


# --- reading ------------------------------------------------------------------------------------


def parse_config(data: bytes, *, source: str) -> Config:
    """Parse a configuration file (the format is documented in ``config/distributord.toml``).

    Args:
        data: The file's contents; empty means all defaults.
        source: The file's name, for error messages.

    Returns:
        The configuration: every key the file leaves out has its default.

    Raises:
        ConfigError: The file is not UTF-8 TOML, has an unknown table or key, a value of the
            wrong type or out of range; the message names the file and the key.
    """
    try:
        return _config(_read_toml(data, source=source))
    except ConfigError as error:
        raise error.within(source=source) from None


def config_files(path: str | os.PathLike[str]) -> list[str]:
    """The files :func:`load_config` reads for ``path``, in the order it reads them.

    ``path`` itself, then the drop-ins: the files named ``*.toml`` in the directory
    :data:`DROP_IN_DIR` beside it, in the order of their names (as bytes, whatever the locale).
    Other files there are not read (dpkg leaves ``.dpkg-old`` and ``.dpkg-dist`` files, editors
    their backups), nor hidden ones (an editor's lock, ``.#50-site.toml``), nor subdirectories;
    a missing directory means no drop-ins.

    Raises:
        ConfigError: The drop-in directory exists but cannot be listed (named, with the reason).
    """
    source = os.fspath(path)
    directory = os.path.join(os.path.dirname(source), DROP_IN_DIR)
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return [source]
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(
            f"cannot list the drop-in directory: {reason}", source=directory
        ) from None
    names = sorted(
        (
            entry.name
            for entry in entries
            if entry.name.endswith(".toml")
            and not entry.name.startswith(".")
            and not entry.is_dir()
        ),
        key=os.fsencode,
    )
    return [source, *(os.path.join(directory, name) for name in names)]


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read the configuration file at ``path`` and its drop-ins, merged.

    What ``distributord run``, its reload (SIGHUP) and ``distributord check-config`` read. The
    files (:func:`config_files`) are read in order, each overriding the keys it sets: tables
    merge key by key, at any depth, except a program's, which a file that names it
    (``[programs.NAME]``) replaces whole. The merged document is then checked as one file would
    be, and an error names the file that set the offending key (for a key no file set, checked
    against one that was, the last file that set a key of its table).

    Raises:
        ConfigError: A file cannot be read (named, with the reason), is not UTF-8 TOML, or the
            merged configuration is invalid; the message names the file and the key.
    """
    files = config_files(path)
    merged: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}
    for source in files:
        try:
            with open(source, "rb") as file:
                data = file.read()
        except OSError as error:
            reason = error.strerror or str(error)
            raise ConfigError(
                f"cannot read the configuration file: {reason}", source=source
            ) from None
        _merge(merged, _read_toml(data, source=source), (), source, origins)
    try:
        return _config(merged)
    except ConfigError as error:
        raise error.within(source=_origin(error.key, origins, default=files[0])) from None


def _read_toml(data: bytes, *, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(f"not UTF-8 text: {error}", source=source) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"not valid TOML: {error}", source=source) from None


def _merge(
    into: dict[str, Any],
    doc: Mapping[str, Any],
    at: tuple[str, ...],
    source: str,
    origins: dict[tuple[str, ...], str],
) -> None:
    """Merge ``doc`` (a table at path ``at``) into ``into``; note ``source`` as each key's origin.

    A table meets a table: merged key by key, except a program (``programs.NAME``), replaced
    whole. Anything else replaces what was there, and forgets the origins of what was under it.
    """
    for key, value in doc.items():
        path = (*at, key)
        for depth in range(1, len(path) + 1):
            origins[path[:depth]] = source  # a table's origin: the last file that set in it
        old = into.get(key)
        a_program = len(path) == 2 and path[0] == PROGRAMS
        if not (isinstance(value, dict) and isinstance(old, dict)) or a_program:
            for below in [p for p in origins if len(p) > len(path) and p[: len(path)] == path]:
                del origins[below]
            into[key] = {} if isinstance(value, dict) else copy.deepcopy(value)
        if isinstance(value, dict):
            _merge(into[key], value, path, source, origins)


def _origin(key: str, origins: Mapping[tuple[str, ...], str], *, default: str) -> str:
    """The file that set the dotted ``key``, or the nearest table above it that a file set."""
    # Dotted, a program's name may hold dots: compare as text, the longest match wins.
    best, found = "", default
    for path, source in origins.items():
        dotted = ".".join(path)
        # An array of tables' index follows its name: limits[2].name.
        inside = key.startswith((dotted + ".", dotted + "["))
        if (key == dotted or inside) and len(dotted) > len(best):
            best, found = dotted, source
    return found


def _config(doc: dict[str, Any]) -> Config:
    tables: dict[str, Any] = {}
    for name, value in doc.items():
        if name == LIMITS:
            tables[name] = _build_limits(value)
            continue
        cls = TABLES.get(name)
        if cls is None and name != PROGRAMS:
            what = "table" if isinstance(value, dict) else "key"
            raise ConfigError(f"unknown {what}; known tables: {', '.join(KNOWN_TABLES)}", key=name)
        if not isinstance(value, dict):
            raise ConfigError(f"must be a table ([{name}]), got {_show(value)}", key=name)
        tables[name] = _build_programs(value) if cls is None else _build(cls, value, name)
    return Config(**tables)  # the programs' own check names its keys whole


def _build_programs(table: dict[str, Any]) -> dict[str, ProgramConfig]:
    programs = {}
    for name, value in table.items():
        key = f"{PROGRAMS}.{name}"
        if not isinstance(value, dict):
            raise ConfigError(f"must be a table ([{key}]), got {_show(value)}", key=key)
        programs[name] = _build(ProgramConfig, value, key)
    return programs


def _build_limits(value: Any) -> list[LimitConfig]:
    """``[[limits]]``: each table checked as ``limits[INDEX]`` (from 0, in file order)."""
    if not (isinstance(value, list) and all(isinstance(item, dict) for item in value)):
        raise ConfigError(
            f"must be an array of tables ([[{LIMITS}]]), got {_show(value)}", key=LIMITS
        )
    return [_build(LimitConfig, table, f"{LIMITS}[{index}]") for index, table in enumerate(value)]


def _build(cls: type[_A], table: dict[str, Any], name: str) -> _A:
    known = [field.name for field in attrs.fields(cls)]
    for key in table:
        if key not in known:
            raise ConfigError(f"unknown key; known keys: {', '.join(known)}", key=f"{name}.{key}")
    for field in attrs.fields(cls):
        if field.default is attrs.NOTHING and field.name not in table:
            raise ConfigError("is required", key=f"{name}.{field.name}")
    try:
        return cls(**table)
    except ConfigError as error:
        raise error.within(name) from None


# --- writing ------------------------------------------------------------------------------------


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def to_toml(config: Config) -> str:
    """``config`` as a configuration file: every table and key, with its effective value.

    What ``distributord check-config`` prints. Parsed back (:func:`parse_config`), it gives
    ``config`` again. A key that is not set (an optional limit) is left out, as a file leaves
    it out; ``[programs.NAME]`` tables follow the others, in name order, then ``[[limits]]``
    in their order.
    """
    lines: list[str] = []
    sections: list[tuple[str, attrs.AttrsInstance]] = [
        (name, getattr(config, name)) for name in TABLES
    ]
    sections += [
        (f"{PROGRAMS}.{_toml_key(name)}", program)
        for name, program in sorted(config.programs.items())
    ]
    sections += [(f"[{LIMITS}]", limit) for limit in config.limits]
    for header, table in sections:
        if lines:
            lines.append("")
        lines.append(f"[{header}]")
        for field in attrs.fields(type(table)):
            value = getattr(table, field.name)
            if value is not None:
                lines.append(f"{field.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _toml_string(name)


def _toml_string(text: str) -> str:
    # A TOML basic string: backslash, quote and control characters escaped.
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML for {value!r}")  # a new kind of key: give it a case here


# --- flags --------------------------------------------------------------------------------------


def with_overrides(
    config: Config,
    *,
    microgrid: str | None = None,
    socket: str | None = None,
    log_level: str | None = None,
) -> Config:
    """``config`` with the command line's flags applied (a flag beats the file).

    Args:
        config: The configuration from the file (or the defaults).
        microgrid: ``--microgrid HOST:PORT`` (``microgrid.address``).
        socket: ``--socket PATH`` (``control.socket``).
        log_level: ``--log-level LEVEL`` (``logging.level``).

    Raises:
        ConfigError: A flag's value is invalid; the message names the flag and the key.
    """
    if microgrid is not None:
        config = _override(config, "--microgrid", "microgrid", address=microgrid)
    if socket is not None:
        config = _override(config, "--socket", "control", socket=socket)
    if log_level is not None:
        config = _override(config, "--log-level", "logging", level=log_level)
    return config


def _override(config: Config, flag: str, table: str, **changes: Any) -> Config:
    try:
        section = attrs.evolve(getattr(config, table), **changes)
    except ConfigError as error:
        raise error.within(table, source=flag) from None
    return attrs.evolve(config, **{table: section})


def live_keys() -> frozenset[str]:
    """The dotted keys whose fields carry :data:`LIVE` metadata."""
    return frozenset(
        f"{table}.{field.name}"
        for table, cls in TABLES.items()
        for field in attrs.fields(cls)
        if field.metadata.get("live")
    )


def differences(old: Config, new: Config) -> list[str]:
    """The dotted keys whose values differ between ``old`` and ``new``, in file order.

    A program added or removed is ``programs.NAME``; a changed one, each key that changed
    (``programs.NAME.priority``).

    For SIGHUP: the daemon applies what can change live and logs the keys that need a restart.
    """
    changed = [
        f"{table}.{field.name}"
        for table, cls in TABLES.items()
        for field in attrs.fields(cls)
        if getattr(getattr(old, table), field.name) != getattr(getattr(new, table), field.name)
    ]
    for name in [*old.programs, *(n for n in new.programs if n not in old.programs)]:
        before, after = old.programs.get(name), new.programs.get(name)
        if before is None or after is None:
            changed.append(f"{PROGRAMS}.{name}")  # added or removed
            continue
        changed.extend(
            f"{PROGRAMS}.{name}.{field.name}"
            for field in attrs.fields(ProgramConfig)
            if getattr(before, field.name) != getattr(after, field.name)
        )
    if old.limits != new.limits:
        changed.append(LIMITS)
    return changed


def reloaded(running: Config, loaded: Config) -> Config:
    """The configuration a reload puts in force: ``loaded``'s live keys, ``running``'s others.

    A key that needs a restart keeps its running value until then, so the running
    configuration always says what the daemon does (the queue its channel was built with, the
    address it is connected to).
    """
    tables = {}
    for table, cls in TABLES.items():
        kept = {
            field.name: getattr(getattr(running, table), field.name)
            for field in attrs.fields(cls)
            if not field.metadata.get("live")
        }
        tables[table] = attrs.evolve(getattr(loaded, table), **kept)
    return Config(**tables, programs=loaded.programs, limits=loaded.limits)


LIVE_KEYS = live_keys()
"""Keys a reload applies to the running daemon; the others (the microgrid address, the socket,
the queue size, the stream silence bound, the metrics address) need a restart. The programs'
keys are live too (:func:`is_live`)."""


def is_live(key: str) -> bool:
    """Whether a reload applies the dotted ``key`` (from :func:`differences`) at once."""
    return key in LIVE_KEYS or key.startswith(f"{PROGRAMS}.") or bool(_LIMITS_KEY.match(key))


_LIMITS_KEY = re.compile(rf"\[?{LIMITS}(?:$|[.\[\]])")
"""``limits``, ``limits[2].name``, and ``[limits].name`` as :func:`table_docs` names the keys."""


# --- documentation -------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class KeyDoc:
    """One key as ``distributord.toml(5)`` documents it, read from its declaration here.

    Attributes:
        key: The dotted key (``requests.default_timeout_s``; ``programs.NAME.priority``).
        meaning: The key's entry in its table class's ``Attributes`` docstring.
        accepts: What its validator accepts (the validator's docstring).
        default: Its default as TOML, or ``None`` when it is left out by default (or
            required).
        live: Whether a reload (SIGHUP) applies it to the running daemon.
        required: Whether a table that has the key must set it (a limit's ``name``).
    """

    key: str
    meaning: str
    accepts: str
    default: str | None
    live: bool
    required: bool = False


def table_docs() -> list[tuple[str, str, list[KeyDoc]]]:
    """Every table and key, in file order: ``(table, summary, keys)``.

    The summary is the first line of the table class's docstring; ``[programs.NAME]`` and
    ``[[limits]]`` (named ``[limits]``, so that the page's brackets make it ``[[limits]]``) come
    last. So the manual page is written from the declarations themselves.
    """
    tables: list[tuple[str, type[attrs.AttrsInstance]]] = [
        *TABLES.items(),
        (f"{PROGRAMS}.NAME", ProgramConfig),
        (f"[{LIMITS}]", LimitConfig),
    ]
    return [
        (name, _summary(cls), [_key_doc(name, field, cls) for field in attrs.fields(cls)])
        for name, cls in tables
    ]


def _summary(cls: type) -> str:
    return (cls.__doc__ or "").strip().splitlines()[0]


def _key_doc(table: str, field: attrs.Attribute[Any], cls: type) -> KeyDoc:
    key = f"{table}.{field.name}"
    meaning = _attribute_docs(cls).get(field.name)
    if meaning is None:
        raise LookupError(f"{cls.__name__}'s docstring does not describe {field.name}")
    validators = getattr(field.validator, "_validators", (field.validator,))  # attrs' and_()
    accepts = "; ".join(
        _lower_first(v.__doc__.strip().splitlines()[0].rstrip("."))
        for v in validators
        if v is not None and v.__doc__
    )
    default = field.default
    required = default is attrs.NOTHING
    return KeyDoc(
        key=key,
        meaning=meaning,
        accepts=accepts,
        default=None if default is None or required else _toml_value(default),
        live=is_live(key),
        required=required,
    )


def _lower_first(text: str) -> str:
    """``"True or false"`` -> ``"true or false"``; ``"HOST:PORT..."`` stays."""
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _attribute_docs(cls: type) -> dict[str, str]:
    """The ``Attributes:`` section of a Google-style class docstring, name to text."""
    docs: dict[str, str] = {}
    name = None
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    start = lines.index("Attributes:") + 1 if "Attributes:" in lines else len(lines)
    for line in lines[start:]:
        if not line.strip():
            break
        entry = re.fullmatch(r" {4}(\w+): (.*)", line)
        if entry:
            name = entry[1]
            docs[name] = entry[2]
        elif name is not None:
            docs[name] += " " + line.strip()
    return docs
