"""dermino.data.adapters"""
