"""mpp.store"""
