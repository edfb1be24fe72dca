"""Meta-policy RLModules: memory cores (:mod:`.cores`) and the policy module (:mod:`.policy`)."""

from metaray.models.cores import ARCHS, build_core
from metaray.models.policy import RecurrentMetaPolicy

__all__ = ["ARCHS", "RecurrentMetaPolicy", "build_core"]
