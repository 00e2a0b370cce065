"""Developer tools: the demo, benchmarks, backtest and evaluation harnesses."""
