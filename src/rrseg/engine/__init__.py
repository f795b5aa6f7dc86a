"""rrseg.engine"""
