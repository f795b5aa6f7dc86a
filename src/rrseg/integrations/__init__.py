"""rrseg.integrations"""
