"""dermino.report"""
