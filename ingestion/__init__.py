"""Readers that turn raw sources into bronze rows with provenance, and quarantine what they cannot read."""
