"""codetune.serve"""
