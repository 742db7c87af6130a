"""Contract test suites: one per port, run against every adapter and fake."""
