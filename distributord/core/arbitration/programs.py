"""Programs: which program a peer may act as, and what ``hello`` answers.

Theory of operation
-------------------
The operator declares programs in the configuration (``[programs.NAME]``,
:class:`~distributord.core.config.ProgramConfig`); programs cannot raise their own priority
(``spec/arbitration.md``, "Programs"). A connection that the socket let in acts as
``default`` until it says ``hello {"program": NAME}``; hello is checked here against the
peer's credentials:

* a program that is not configured is refused, naming the programs that are;
* root (uid 0) may act as any program;
* anyone the socket let in may act as ``default`` (it is what they act as anyway);
* otherwise the peer's uid or user name must be in the program's ``users``, or one of its
  gids (primary **or** supplementary) or group names in its ``groups``.

The shell looks the names up (the user and group databases are IO) and hands them in, with
the gids it has from ``SO_PEERCRED`` and ``SO_PEERGROUPS``; a uid or gid with no name is
given as ``None`` or left out, and then only its number can match.

What a connection keeps is the program's *name*: its priority and limits are read from the
running configuration at each decision, so a reload that changes them applies to connections
already open (once the programs are live: ``distributord.core.config``). A reload that removes
a program or takes a peer out of it is for the shell to re-check with :func:`may_act_as`.

Pure: no IO, no clock.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import attrs

from distributord.core.config import DEFAULT_PROGRAM, Config, ProgramConfig

ROOT_UID = 0
"""Root may act as any program (the spec's rule; root may also edit the configuration)."""


@attrs.frozen(kw_only=True)
class Limits:
    """The operator's limits on a program's proposals (``None``: no limit).

    Attributes:
        max_discharge_w: The most it may discharge, a magnitude in watts.
        max_charge_w: The most it may charge, in watts.
        batteries: The only batteries it may propose for; ``None`` for every battery.
    """

    max_discharge_w: float | None = None
    max_charge_w: float | None = None
    batteries: frozenset[int] | None = None

    @classmethod
    def of(cls, program: ProgramConfig) -> Limits:
        """The limits a program's configuration sets."""
        return cls(
            max_discharge_w=program.max_discharge_w,
            max_charge_w=program.max_charge_w,
            batteries=None if program.batteries is None else frozenset(program.batteries),
        )

    def batteries_outside(self, batteries: Collection[int]) -> frozenset[int]:
        """Those of ``batteries`` the program may not propose for (none when unlimited)."""
        if self.batteries is None:
            return frozenset()
        return frozenset(batteries) - self.batteries

    def to_json(self) -> dict[str, Any]:
        """As the protocol sends it: every key present, ``null`` for no limit."""
        return {
            "max_discharge_w": self.max_discharge_w,
            "max_charge_w": self.max_charge_w,
            "batteries": None if self.batteries is None else sorted(self.batteries),
        }


@attrs.frozen(kw_only=True)
class Acting:
    """The program a connection acts as, as the configuration has it now: ``hello``'s result.

    Attributes:
        program: The program's name.
        priority: Its priority (higher wins).
        limits: The operator's limits on its proposals.
    """

    program: str
    priority: int
    limits: Limits

    def to_json(self) -> dict[str, Any]:
        """``hello``'s result: ``{program, priority, limits}``."""
        return {"program": self.program, "priority": self.priority, "limits": self.limits.to_json()}


@attrs.frozen(kw_only=True)
class NotAllowed:
    """``hello`` is refused (the protocol's -32003).

    Attributes:
        message: One line for the client, saying why.
    """

    message: str


def acting_as(program: str, config: Config) -> Acting | None:
    """What acting as ``program`` means under ``config``, or ``None`` if it is not configured.

    ``acting_as(DEFAULT_PROGRAM, config)`` is never ``None``: the default program always exists.
    """
    found = config.programs.get(program)
    if found is None:
        return None
    return Acting(program=program, priority=found.priority, limits=Limits.of(found))


def may_act_as(
    program: str,
    *,
    uid: int,
    user_name: str | None,
    gids: Collection[int],
    group_names: Collection[str],
    config: Config,
) -> bool:
    """Whether a peer may act as ``program`` (the socket has let it in already).

    Args:
        program: The program's name, as the peer gave it.
        uid: The peer's uid.
        user_name: The uid's name, or ``None`` if it has none.
        gids: The peer's primary and supplementary gids.
        group_names: The names of those gids that have one.
        config: The running configuration (``programs``).
    """
    found = config.programs.get(program)
    if found is None:
        return False
    if uid == ROOT_UID or program == DEFAULT_PROGRAM:
        return True
    for user in found.users:
        if user == uid if isinstance(user, int) else user == user_name:
            return True
    named = set(group_names)
    numbered = set(gids)
    return any(
        group in numbered if isinstance(group, int) else group in named for group in found.groups
    )


def hello(
    program: str,
    *,
    uid: int,
    user_name: str | None,
    gids: Collection[int],
    group_names: Collection[str],
    config: Config,
) -> Acting | NotAllowed:
    """``hello {"program": program}`` from a peer: what it acts as from now on, or why not.

    The arguments are :func:`may_act_as`'s.
    """
    acting = acting_as(program, config)
    if acting is None:
        known = ", ".join(sorted(config.programs))
        return NotAllowed(message=f"not authorised: no program {program!r}; programs: {known}")
    allowed = may_act_as(
        program,
        uid=uid,
        user_name=user_name,
        gids=gids,
        group_names=group_names,
        config=config,
    )
    if not allowed:
        who = f"uid {uid}" if user_name is None else f"uid {uid} ({user_name})"
        return NotAllowed(
            message=(
                f"not authorised: {who} may not act as program {program!r} (neither its user"
                " nor any of its groups is listed for it)"
            )
        )
    return acting
