"""Tests that need a CUDA GPU (marked `cuda`; each module skips cleanly where there is none).

`make gpu-check` runs them with the other `cuda` tests and then the GPU benchmarks. Each test
checks that its work ran on the GPU (`tests.helpers.cuda.on_gpu`), not silently on the CPU.
"""
