"""dermino.knowledge"""
