"""MCNet's networks. Paper components: the meta-memory, IICM and MCM live in `memory.py`."""
from .dense_motion import DenseMotion, DenseMotionNetwork
from .generator import Decoded, Generator
from .keypoint_detector import KeypointDetector
from .mcnet import MCNet, SourceCache
from .memory import IdentityConditionedMemory, MemoryCompensationModule, MemoryUnit

__all__ = ["DenseMotion", "DenseMotionNetwork", "Decoded", "Generator", "KeypointDetector", "MCNet", "SourceCache",
           "IdentityConditionedMemory", "MemoryCompensationModule", "MemoryUnit"]
