"""dermino.losses"""
