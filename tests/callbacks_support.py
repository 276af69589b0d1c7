"""Shared builders for the call-back tests: a roster on the lab's queue members, a fake clock."""

from __future__ import annotations

from callguard.callbacks.settings import CallbackConfig, HeadConfig, ManagerConfig

ALL_DAY = {d: "00:00-24:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
T0 = 1796114370.0  # 2026-12-01 09:19:30 UTC, the day s18–s21 were recorded (a Tuesday)


def lab_config(**kw: object) -> CallbackConfig:
    """Agent101/Agent102 of the recorded lab (``Local/10X@agents``), on duty around the clock."""
    managers = [ManagerConfig(name="Ivan", crm_user_id=101, devices=["Local/101@agents"], days=ALL_DAY),
                ManagerConfig(name="Petr", crm_user_id=102, devices=["Local/102@agents"], days=ALL_DAY)]
    base: dict[str, object] = {"enabled": True, "managers": managers, "head": HeadConfig("Olga", 7)}
    base.update(kw)
    return CallbackConfig(**base)  # type: ignore[arg-type]
