"""preftune.eval"""
