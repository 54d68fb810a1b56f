"""What NVIDIA's data sheets say about GPU models that logs name: which have no fans, and their top clock.

Logs often name the GPU but leave out what the driver would have told: whether it has fans (a
data-center card has none; the chassis cools it) and its maximum SM clock. A few well-known
data-center models fill that in. Consumer cards are left out on purpose: their boost clocks
differ from one board partner's card to the next, so only the card's own log can tell.
"""

from __future__ import annotations

import re

# Model tokens of data-center GPUs, which are cooled by the chassis (NVIDIA's "passive" boards).
_PASSIVE_MODELS = frozenset(
    {
        "K80", "M40", "M60", "P4", "P40", "P100", "V100", "V100S", "T4",
        "A2", "A10", "A10G", "A16", "A30", "A40", "A100", "A800",
        "H20", "H100", "H800", "H200", "GH200", "B100", "B200", "B300", "GB200", "GB300",
        "L4", "L20", "L40", "L40S",
    }
)  # fmt: skip
# Maximum SM (boost) clock per model, MHz, from the data sheets; the first pattern that matches wins.
_MAX_SM_CLOCK_MHZ: tuple[tuple[re.Pattern[str], int], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), mhz)
    for pattern, mhz in (
        (r"\bV100S\b", 1597),
        (r"\bV100[- ]SXM", 1530),
        (r"\bV100[- ]PCIE", 1380),
        (r"\bA100\b", 1410),
        (r"\bA10G?\b", 1695),
        (r"\bA30\b", 1440),
        (r"\bA40\b", 1740),
        (r"\bH100\b.*\bNVL\b", 1785),
        (r"\bH100\b.*\bPCIE\b", 1755),
        (r"\bH100\b", 1980),  # SXM5 ("NVIDIA H100 80GB HBM3")
        (r"\bH200\b.*\bNVL\b", 1785),
        (r"\bG?H200\b", 1980),
        (r"\bL40S\b", 2520),
        (r"\bL40\b", 2490),
        (r"\bL4\b", 2040),
        (r"\bT4\b", 1590),
    )
)


def _tokens(name: str) -> list[str]:
    return [token.upper() for token in re.split(r"[^A-Za-z0-9]+", name) if token]


def is_passive_model(name: str | None) -> bool:
    """Whether ``name`` is a data-center GPU without fans of its own.

    >>> is_passive_model("NVIDIA H100 80GB HBM3"), is_passive_model("Tesla V100-SXM2-32GB-LS")
    (True, True)
    >>> is_passive_model("NVIDIA GeForce RTX 4090"), is_passive_model("NVIDIA RTX A4000")
    (False, False)
    """
    tokens = _tokens(name or "")
    return bool(tokens) and (tokens[0] == "TESLA" or any(token in _PASSIVE_MODELS for token in tokens))


# A laptop's GPU: its fans are the laptop's, run by the embedded controller, and the driver reads none.
_MOBILE = re.compile(r"\b(laptop|mobile|max-?q)\b|\bmx\d{3}\b|\bgtx? ?\d{3,4}m\b", re.IGNORECASE)


def is_mobile_model(name: str | None) -> bool:
    """Whether ``name`` is a laptop's GPU ("Laptop GPU", "Max-Q", "Mobile", an MX or a GTX ...M).

    >>> is_mobile_model("NVIDIA GeForce RTX 4060 Laptop GPU"), is_mobile_model("Quadro RTX 5000 with Max-Q Design")
    (True, True)
    >>> is_mobile_model("GeForce GTX 980M"), is_mobile_model("NVIDIA GeForce RTX 4090"), is_mobile_model(None)
    (True, False, False)
    """
    return bool(name) and _MOBILE.search(name) is not None


def spec_max_sm_clock_mhz(name: str | None) -> int | None:
    """The model's maximum SM clock from its data sheet, MHz; ``None`` for models not listed.

    >>> spec_max_sm_clock_mhz("Tesla V100-SXM2-32GB"), spec_max_sm_clock_mhz("NVIDIA H100 PCIe")
    (1530, 1755)
    >>> spec_max_sm_clock_mhz("NVIDIA GeForce RTX 3090") is None
    True
    """
    for pattern, mhz in _MAX_SM_CLOCK_MHZ:
        if name and pattern.search(name):
            return mhz
    return None
