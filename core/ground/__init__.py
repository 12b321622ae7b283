"""The ground layer: errors aside, what every other layer may use (formatting, the
registry, devices, files, which layers are prunable). Nothing here imports another core layer."""
