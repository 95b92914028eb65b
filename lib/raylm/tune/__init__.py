"""raylm.tune"""
