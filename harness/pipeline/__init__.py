"""The run pipeline: one run from its checked config to its record (runner -> recipe's steps: model,
method, train, evaluate, retention) and what those steps use (scoring, measurement, processes)."""
