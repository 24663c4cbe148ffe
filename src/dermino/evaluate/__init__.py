"""dermino.evaluate"""
