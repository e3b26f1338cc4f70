"""The catalog: table names, schemas and locations; provenance, runs and lineage.

The bottom of the import graph: it imports nothing else of millpond.
"""
