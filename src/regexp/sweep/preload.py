"""What the stacked launcher's fork server imports before it forks the workers: torch and the
training code, once for all of them. (Outside hydra_plugins, which Hydra imports whole to find
its plugins.) The server lives as long as the launcher's process; when that ends, the server
leaves without the interpreter's teardown, whose garbage collection walks every object torch
made: a second of CPU, with the launcher's output pipe held open, so that a caller reading it
to its end would wait as long."""

import atexit
import os

import hydra.core.utils  # noqa: F401 (what a worker sets up with)
import torch  # noqa: F401

import regexp.run.population  # noqa: F401 (what every population needs)
from regexp import process

process.freeze_heap()  # (nor does a worker's collector walk, and so copy, the server's pages)
atexit.register(os._exit, 0)
