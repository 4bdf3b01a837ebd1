"""What a config composes: data, models, init, optimizers, schedules.

Each group's schema dataclasses sit beside their builder; options.py registers them."""
