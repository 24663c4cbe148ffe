"""dermino.segment"""
