"""metaray: distributed meta-reinforcement learning (RL²-style) on Ray RLlib."""

__version__ = "0.1.0"
