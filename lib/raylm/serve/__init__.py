"""raylm.serve"""
