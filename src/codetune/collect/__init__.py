"""codetune.collect"""
