"""raylm.train"""
