"""mpp.cli"""
