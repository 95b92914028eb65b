"""raylm.jobs"""
