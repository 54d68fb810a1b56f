"""``[diagnose]``: facts about the machine that ``gpud diagnose`` needs and the GPUs cannot report."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DiagnoseSettings(BaseModel):
    """Facts about the machine the GPUs cannot report, for the power and cost checks."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    psu_w: float | None = Field(
        None, gt=0, description="the power supply's rating, W (PSU check off when unset)"
    )
    cpu_w: float = Field(150, ge=0, description="the CPU's power at load, W")
    price_per_kwh: float = Field(0.30, ge=0, description="electricity price per kWh")
    currency: str = Field("EUR", min_length=1, max_length=8, description="currency of the price")
