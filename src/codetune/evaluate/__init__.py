"""codetune.evaluate"""
