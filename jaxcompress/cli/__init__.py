"""The `jaxcompress` command."""
