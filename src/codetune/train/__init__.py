"""codetune.train"""
