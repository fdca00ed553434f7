"""A faithful local Sautikit: REST API, signed callbacks, verbs, the media WebSocket as a client,
simulated people who really speak, billing, recordings and a record of every app mistake.

    from local.sautikit import Simulator, SimulatorThread, Directory
"""

from local.sautikit.directory import Directory, Person, Rep
from local.sautikit.simulator import SimConfig, Simulator, SimulatorThread
from local.sautikit.violations import VIOLATIONS

__all__ = ["VIOLATIONS", "Directory", "Person", "Rep", "SimConfig", "Simulator", "SimulatorThread"]
