"""Core contract: Compressor, composition, paths and summaries."""
