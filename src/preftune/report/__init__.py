"""preftune.report"""
