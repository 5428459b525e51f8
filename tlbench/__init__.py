"""The tlbench command line: start the stack, start workers, register datasets, submit benchmarks."""
