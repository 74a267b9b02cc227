"""Targets: one module or package per kind of deployment, each resolved by name through harness.target."""
