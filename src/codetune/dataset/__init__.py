"""codetune.dataset"""
