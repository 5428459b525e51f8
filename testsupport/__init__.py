"""Helpers that the tests and the benchmarks share, and those several test modules share (no test module
imports another): run the stack, wait for conditions, make small image datasets, serve the web app in a thread.
Not part of the tlbench wheel; import it from the repository root."""
