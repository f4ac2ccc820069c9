"""Where a generation's events live while it runs, and how subscribers read them.

`Broker` is the seam: the in-process `MemoryBroker` is the default, and a broker shared
between instances (Redis) plugs in behind the same two protocols.
"""

from chatrelay.broker.base import Broker, Topic
from chatrelay.broker.event import EventKind, LogEvent
from chatrelay.broker.memory import MemoryBroker

__all__ = ["Broker", "EventKind", "LogEvent", "MemoryBroker", "Topic"]
