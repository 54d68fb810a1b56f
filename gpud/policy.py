"""Fan policies by name, as ``gpud run --policy`` and ``gpud simulate --policy/--compare`` take them.

``stock`` (the driver's automatic schedule; gpud only watches), ``curve:NAME``, ``predictive``, and
``limit`` (every fan pinned at 100 % from the start: the physical limit of the case, the best clocks
any fan policy can reach, and the loudest). A bare curve name is short for ``curve:NAME``
(``cool`` = ``curve:cool``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum

from gpud.decide.curves import CurveSettings, FanSettings
from gpud.decide.predictive import PREDICTIVE

_LIMIT_CURVE = "gpud-limit"  # the curve that pins fans at 100 %


class PolicyKind(StrEnum):
    """Who drives the fans."""

    STOCK = "stock"
    CURVE = "curve"
    PREDICTIVE = "predictive"
    LIMIT = "limit"


RUN_KINDS = frozenset(PolicyKind) - {PolicyKind.LIMIT}  # what `gpud run` can drive; limit is simulate's


def _named(kinds: Collection[PolicyKind]) -> list[str]:
    """The policies of ``kinds`` that go by their name alone (a curve goes by its own)."""
    return [kind.value for kind in PolicyKind if kind in kinds and kind is not PolicyKind.CURVE]


def _accepted(kinds: Collection[PolicyKind]) -> str:
    return ", ".join([*_named(kinds), "curve:NAME or a curve's name"])


@dataclass(frozen=True, slots=True)
class Policy:
    """A fan policy as named on the command line: ``stock``, ``curve:NAME``, ``predictive``, ``limit``."""

    kind: PolicyKind
    curve: str | None = None

    @classmethod
    def parse(cls, text: str, kinds: Collection[PolicyKind] = frozenset(PolicyKind)) -> Policy:
        """``"curve:balanced"`` or ``"balanced"`` → curve policy; ``ValueError`` names what is accepted.

        Whether a curve of that name exists is for :meth:`fans` to say, which knows the curves.

        >>> Policy.parse("cool") == Policy.parse("curve:cool") == Policy(PolicyKind.CURVE, "cool")
        True
        """
        kind, colon, curve = text.partition(":")
        if not colon and kind and kind not in PolicyKind.__members__.values():
            return cls(PolicyKind.CURVE, kind)
        try:
            policy = cls(PolicyKind(kind), curve or None)
        except ValueError:
            policy = None
        if policy is None or (policy.kind is PolicyKind.CURVE) != bool(curve) or policy.kind not in kinds:
            raise ValueError(f"unknown policy {text!r}: use {_accepted(kinds)}")
        return policy

    @property
    def label(self) -> str:
        """The policy as it was named."""
        return f"curve:{self.curve}" if self.curve else self.kind.value

    def fans(self, fans: FanSettings, kinds: Collection[PolicyKind] = frozenset(PolicyKind)) -> FanSettings:
        """``fans`` with every fan on this policy; ``ValueError`` for a curve ``fans`` does not know.

        ``stock`` returns ``fans`` unchanged: it is run with no fan backend at all.
        """
        every_fan = {"gpus": {}, "heat_buildup_curve": None}
        if self.kind is PolicyKind.CURVE:
            known = fans.all_curves()
            if self.curve not in known:
                raise ValueError(
                    f"no curve named {self.curve!r} (curves: {', '.join(sorted(known))}; "
                    f"policies: {', '.join(_named(kinds))})"
                )
            return fans.model_copy(update={"curve": self.curve, **every_fan})
        if self.kind is PolicyKind.PREDICTIVE:
            return fans.model_copy(update={"curve": PREDICTIVE, **every_fan})
        if self.kind is PolicyKind.LIMIT:
            limit = CurveSettings(points=[(0.0, 100.0), (200.0, 100.0)])
            curves = fans.curves | {_LIMIT_CURVE: limit}
            return fans.model_copy(
                update={"curve": _LIMIT_CURVE, "curves": curves, "slew_pct_per_s": 100.0, **every_fan}
            )
        return fans
