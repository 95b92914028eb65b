"""raylm.data"""
