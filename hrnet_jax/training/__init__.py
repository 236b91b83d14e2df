"""The shared trainer: mesh and shardings, optimizer, train state and step, checkpoints, loop."""
