"""Developing a topology without a broker: the test driver and `processor test`."""

from processor.testing.driver import DriverError, TopologyTestDriver

__all__ = ["DriverError", "TopologyTestDriver"]
