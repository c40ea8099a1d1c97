"""codetune.inference"""
