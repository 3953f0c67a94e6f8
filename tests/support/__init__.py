"""Plain helpers shared by the test modules: functions of their arguments alone (ELF lookups,
subprocess runners, gcc builds), so they are imported, not injected. Nothing here is a test
or a conftest; fixtures live in the conftest files and use these helpers."""
