"""The testbed: network namespaces, the link emulator, scenarios and the demo."""
