"""codetune.modeling"""
