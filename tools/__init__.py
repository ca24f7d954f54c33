"""Development tools (not shipped): lint contracts, the flake hunt."""
