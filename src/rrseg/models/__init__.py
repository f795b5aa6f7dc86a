"""rrseg.models"""
