"""Tensor operations shared by the stages: log-prob gathering, masked statistics, KL estimators."""
