"""raylm.eval"""
