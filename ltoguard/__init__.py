"""ltoguard: run the memory-heavy LTO compiles of a cargo build a few at a time."""

__version__ = "0.1.0"
