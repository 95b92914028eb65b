"""raylm.models"""
