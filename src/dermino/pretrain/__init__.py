"""dermino.pretrain"""
