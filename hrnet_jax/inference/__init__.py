"""Test-time inference beyond one forward pass: flip, multi-scale, sliding windows."""
