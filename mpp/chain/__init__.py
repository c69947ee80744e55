"""mpp.chain"""
