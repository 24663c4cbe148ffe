"""dermino.data"""
