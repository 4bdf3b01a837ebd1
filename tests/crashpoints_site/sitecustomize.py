"""Loaded at the start of each Python process of a command under test (tests/crashpoints.py):
its write points are counted with the command's own."""

import crashpoints

crashpoints.install_from_environment()
