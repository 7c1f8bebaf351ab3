"""Deployment targets: their budgets and, later, the per-target material (C runtime,
Raspberry Pi bundle). Installed as ``edgeconv.targets``."""

from .profiles import PROFILES, TargetProfile, get_profile

__all__ = ["PROFILES", "TargetProfile", "get_profile"]
