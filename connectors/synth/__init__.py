"""connectors/synth."""
