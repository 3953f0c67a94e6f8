"""stepper: breakpoints in traced Linux x86-64 processes, stepped over by emulation."""
